package tenantstatus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// now is the inspector's clock: ages are exact.
var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

type fixture struct {
	ctx  context.Context
	p    *natsx.Provisioned
	sb   *sandbox.Sandbox
	env  map[string]string
	in   *tenantstatus.Inspector
	pub  natsx.Publisher
	ldgr *ledger.Ledger
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{
		{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", DailyAPILimit: 1000, CustomFieldInstalled: true, CustomFieldWritable: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sf := sandbox.ServeLocal(sb, nil)
	t.Cleanup(sf.Close)
	env := map[string]string{
		"SF_ACME_TOKEN_URL": sf.OrgURL("acme"), "SF_ACME_CLIENT_ID": "acme-id", "SF_ACME_CLIENT_SECRET": "acme-secret",
		// globex's secret is wrong: the token request fails.
		"SF_GLOBEX_TOKEN_URL": sf.OrgURL("acme"), "SF_GLOBEX_CLIENT_ID": "acme-id", "SF_GLOBEX_CLIENT_SECRET": "wrong",
	}
	l, err := ledger.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	in := &tenantstatus.Inspector{
		JS: p.JS, Topology: p.Topology, Settings: tenant.Store{KV: p.Tenants}, Health: tenant.HealthStore{KV: p.Health},
		Ledger:     l,
		Salesforce: tenantstatus.SourceClients{Source: sfcreds.Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}},
		Now:        func() time.Time { return now },
	}
	return &fixture{ctx: ctx, p: p, sb: sb, env: env, in: in, pub: natsx.Publisher{JS: p.JS, Topology: p.Topology}, ldgr: l}
}

func (f *fixture) publish(t *testing.T, tenantID, id string, occurred time.Time) {
	t.Helper()
	ev := &optoutv1.OptOutEvent{EventId: id, TenantId: tenantID, Person: &optoutv1.Person{SalesConnectId: "sc-" + id},
		Action: optoutv1.Action_UNSUBSCRIBE, OccurredAt: timestamppb.New(occurred)}
	if _, err := eventstream.PublishEvent(f.ctx, f.pub, ev, true); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) settings(t *testing.T, tenantID string, fn func(*tenant.Settings)) {
	t.Helper()
	if _, _, err := f.in.Settings.Update(f.ctx, tenantID, func(s *tenant.Settings) error { fn(s); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownTenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st, err := f.in.Inspect(f.ctx, "nobody", tenantstatus.Options{ScanLedger: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Known || st.Stored || st.Settings != tenant.Default("nobody") || st.OldestUnpushed != nil {
		t.Fatalf("status of an unknown tenant = %+v", st)
	}
	if _, err := f.in.Inspect(f.ctx, "a.b", tenantstatus.Options{}); err == nil {
		t.Fatal("a dotted tenant id was accepted")
	}
}

// TestKnownWhileThePusherRuns: the pusher's one consumer serves every
// tenant, so its existence makes no tenant known; a tenant whose events
// are all settled is known by its stored events, with nothing waiting.
func TestKnownWhileThePusherRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.publish(t, "acme", "evt-1", now.Add(-time.Minute))
	c, err := eventstream.EnsurePusherConsumer(f.ctx, f.p.JS, f.p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(f.ctx); err != nil {
		t.Fatal(err)
	}
	st, err := f.in.Inspect(f.ctx, "acme", tenantstatus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Known || st.Backlog.Total() != 0 || st.Backlog.Stored != 1 || !st.Backlog.ConsumerExists || st.OldestUnpushed != nil {
		t.Errorf("acme, its one event settled: known %v, backlog %+v, oldest unpushed %+v; want known with nothing waiting", st.Known, st.Backlog, st.OldestUnpushed)
	}
	if st, err := f.in.Inspect(f.ctx, "nobody", tenantstatus.Options{}); err != nil || st.Known {
		t.Errorf("a tenant nothing mentions: known %v, %v; want unknown although the pusher's consumer exists", st.Known, err)
	}
}

func TestInspectGathersEverySource(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.settings(t, "acme", func(s *tenant.Settings) { s.SyncEnabled, s.Field = true, tenant.SalesOptOut })
	if err := f.in.Health.Put(f.ctx, tenant.Health{Tenant: "acme", Mode: tenant.ModePaused, Reason: "daily API allowance spent", Since: now}); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "acme", "evt-1", now.Add(-90*time.Minute))
	f.publish(t, "acme", "evt-2", now.Add(-time.Minute))
	dlq := nats.NewMsg(f.p.Topology.DLQSubject("acme"))
	dlq.Data = []byte("x")
	dlq.Header.Set(event.HeaderErrorCode, "undecodable")
	if _, err := f.p.JS.PublishMsg(f.ctx, dlq); err != nil {
		t.Fatal(err)
	}
	// An opt-out parked without a Salesforce id, older than the backlog.
	if res, err := f.ldgr.Writer("acme", tenant.DefaultCustomField).Ingest(f.ctx, optout.EventInput{
		ID: "evt-0", Action: optout.OptOut, OccurredAt: now.Add(-3 * time.Hour), SalesConnectID: "sc-9",
	}); err != nil || res.Entry.State != optout.StateParked {
		t.Fatalf("seed the parked opt-out: %+v %v", res, err)
	}

	st, err := f.in.Inspect(f.ctx, "acme", tenantstatus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Known || !st.Stored || st.TargetField != tenant.DefaultCustomField || st.Health == nil || st.Health.Mode != tenant.ModePaused ||
		st.Backlog.Total() != 2 || st.DeadLetters != 1 || st.Ledger != nil {
		t.Fatalf("status = %+v", st)
	}
	if w := st.OldestUnpushed; w == nil || w.Where != tenantstatus.WaitingInBacklog || w.EventID != "evt-1" || w.Age() != 90*time.Minute {
		t.Fatalf("oldest unpushed without the ledger = %+v", w)
	}

	st, err = f.in.Inspect(f.ctx, "acme", tenantstatus.Options{ScanLedger: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ledger == nil || st.Ledger.People != 1 || st.Ledger.Parked != 1 || st.Ledger.ByState[optout.StateParked] != 1 {
		t.Fatalf("ledger summary = %+v", st.Ledger)
	}
	if w := st.OldestUnpushed; w == nil || w.Where != tenantstatus.WaitingParked || w.EventID != "evt-0" || w.Age() != 3*time.Hour {
		t.Fatalf("oldest unpushed with the ledger = %+v", w)
	}

	list, err := f.in.List(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Tenant != "acme" || list[0].Backlog != 2 || list[0].DeadLetters != 1 || list[0].Health == nil {
		t.Fatalf("list = %+v", list)
	}
}

func TestCheckPassesWithAWorkingSetup(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.settings(t, "acme", func(s *tenant.Settings) { s.SyncEnabled, s.Field = true, tenant.SalesOptOut })
	st, err := f.in.Inspect(f.ctx, "acme", tenantstatus.Options{CheckSalesforce: true})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Salesforce
	if c == nil || !c.Ready || len(c.Problems) != 0 || !c.Credentials.OK || !c.Token.OK {
		t.Fatalf("check = %+v", c)
	}
	for _, fs := range c.Fields {
		if !fs.OK || len(fs.Objects) != 2 || !fs.Objects[0].Writable || !fs.Objects[1].Writable {
			t.Errorf("field %s = %+v", fs.Field, fs)
		}
		if fs.InUse != (fs.Option == tenant.SalesOptOut) || fs.Chosen != fs.InUse {
			t.Errorf("field %s: chosen %t in use %t", fs.Field, fs.Chosen, fs.InUse)
		}
	}
	if a := c.Allowance; a == nil || a.Max != 1000 || a.Remaining <= 0 || a.Remaining >= 1000 || a.Source != "Sforce-Limit-Info" {
		t.Fatalf("allowance = %+v", c.Allowance)
	}
}

func TestCheckExplainsEachFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sales := func(s *tenant.Settings) { s.SyncEnabled, s.Field = true, tenant.SalesOptOut }
	f.settings(t, "acme", sales)

	problems := func(c *tenantstatus.Check) string {
		var b strings.Builder
		for _, p := range c.Problems {
			b.WriteString(p.What + " => " + p.Fix + "\n")
		}
		return b.String()
	}
	check := func(tenantID string) *tenantstatus.Check {
		s, err := f.in.Settings.Get(f.ctx, tenantID)
		if err != nil {
			t.Fatal(err)
		}
		return f.in.Check(f.ctx, tenantID, s)
	}

	f.sb.Org("acme").SetCustomField(false, false)
	c := check("acme")
	if c.Ready || !strings.Contains(problems(c), "Marketo_Sales_Opt_Out__c is missing on Contact and Lead. => Install the sales opt-out checkbox") {
		t.Errorf("missing field: ready %t, problems:\n%s", c.Ready, problems(c))
	}
	if !c.Fields[0].OK || c.Fields[1].OK {
		t.Errorf("field statuses = %+v", c.Fields)
	}

	f.sb.Org("acme").SetCustomField(true, false)
	c = check("acme")
	if c.Ready || !strings.Contains(problems(c), "not writable on Contact and Lead. => Give the integration user's profile or permission set Edit access") {
		t.Errorf("read-only field: ready %t, problems:\n%s", c.Ready, problems(c))
	}

	// With sync off the standard field is in use: the sales field's trouble
	// is shown on its line but does not block.
	f.settings(t, "acme", func(s *tenant.Settings) { s.SyncEnabled = false })
	c = check("acme")
	if !c.Ready || len(c.Problems) != 0 || c.Fields[1].OK || !c.Fields[1].Chosen || c.Fields[1].InUse || !c.Fields[0].InUse {
		t.Errorf("sync off: ready %t problems %q fields %+v", c.Ready, problems(c), c.Fields)
	}

	c = check("globex")
	if c.Ready || !c.Credentials.OK || c.Token.OK || !strings.Contains(problems(c), "consumer key and secret") {
		t.Errorf("wrong secret: %+v\n%s", c, problems(c))
	}
	if strings.Contains(problems(c), "wrong") {
		t.Errorf("the client secret leaked into the problem text:\n%s", problems(c))
	}

	c = check("initech")
	if c.Ready || c.Credentials.OK || c.Token.Checked || !strings.Contains(problems(c), "No Salesforce credentials are configured") {
		t.Errorf("no credentials: %+v\n%s", c, problems(c))
	}

	f.sb.Org("acme").SetCustomField(true, true)
	// A spent allowance refuses even the describe calls.
	f.sb.Org("acme").SetAPIUsage(1000)
	c = check("acme")
	if c.Ready || !strings.Contains(problems(c), "REQUEST_LIMIT_EXCEEDED") || !strings.Contains(problems(c), "API allowance is spent") {
		t.Errorf("spent allowance: %s", problems(c))
	}
}
