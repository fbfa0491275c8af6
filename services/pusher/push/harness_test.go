package push_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/internal/teststack/pushstack"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// stack is one test's pusher, NATS namespace and Salesforce sandbox: the
// shared test stack (internal/teststack) with the pusher tests' helpers.
type stack struct {
	*teststack.Stack
	t       *testing.T
	pub     natsx.Publisher
	metrics *push.Metrics // every replica's, so a test reads one set of counters
	seq     atomic.Int64
}

var orgs = []sandbox.OrgConfig{
	{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000,
		CustomField: "Marketo_Sales_Opt_Out__c", CustomFieldInstalled: true, CustomFieldWritable: true},
	{Name: "globex", ClientID: "globex-id", ClientSecret: "globex-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000},
}

func fastConfig() push.Config { return pushstack.FastConfig() }

func newStack(t *testing.T) *stack { return newStackWithin(t, 90*time.Second) }

// newStackWithin is newStack for a test that may run longer than 90 s.
func newStackWithin(t *testing.T, within time.Duration) *stack {
	t.Helper()
	return newStackOf(t, within, orgs)
}

// newStackOf is newStackWithin with the sandbox's orgs (one tenant each).
func newStackOf(t *testing.T, within time.Duration, orgs []sandbox.OrgConfig) *stack {
	t.Helper()
	st := teststack.New(t, orgs, teststack.Options{Within: within, AckWait: 2 * time.Second})
	m, err := push.NewMetrics(tel.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{Stack: st, t: t, pub: natsx.Publisher{JS: st.Prov.JS, Topology: st.Topo}, metrics: m}
}

// start runs a pusher replica until the test ends (or stop is called).
func (s *stack) start(cfg push.Config) (stop func()) {
	return s.startWith(cfg, s.Clients)
}

func (s *stack) startWith(cfg push.Config, clients sfwrite.Clients) (stop func()) {
	s.t.Helper()
	return s.startIn(s.Ctx, cfg, clients)
}

// startIn runs a replica until parent ends (a replica killed mid-work when
// the test cancels parent) or stop is called; adjust changes the replica
// (its clock, say).
func (s *stack) startIn(parent context.Context, cfg push.Config, clients sfwrite.Clients, adjust ...func(*push.Service)) (stop func()) {
	s.t.Helper()
	return pushstack.Start(s.Stack, cfg, pushstack.Options{Ctx: parent, Clients: clients, Metrics: s.metrics,
		Adjust: func(svc *push.Service) {
			for _, a := range adjust {
				a(svc)
			}
		}}).Stop
}

// seed adds one Contact (or Lead) to an org and returns its id.
func (s *stack) seed(org, typ string) string {
	r := s.Org(org).Put(sandbox.Record{Type: typ, Email: fmt.Sprintf("p%d@example.com", s.seq.Add(1))})
	return r.ID
}

type evOpt func(*optoutv1.OptOutEvent)

func at(t time.Time) evOpt {
	return func(e *optoutv1.OptOutEvent) { e.OccurredAt = timestamppb.New(t) }
}
func resub() evOpt         { return func(e *optoutv1.OptOutEvent) { e.Action = optoutv1.Action_RESUBSCRIBE } }
func sfID(id string) evOpt { return func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = id } }

// publish sends an opt-out for sales-connect person sc in tenant.
func (s *stack) publish(tenantID, sc string, opts ...evOpt) string {
	s.t.Helper()
	id := fmt.Sprintf("evt-%d", s.seq.Add(1))
	ev := &optoutv1.OptOutEvent{
		EventId: id, TenantId: tenantID,
		Person:     &optoutv1.Person{SalesConnectId: sc, Email: sc + "@example.com"},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Second)),
		Source:     optoutv1.Source_EMAIL_LINK,
	}
	for _, o := range opts {
		o(ev)
	}
	if _, err := eventstream.PublishEvent(s.Ctx, s.pub, ev, false); err != nil {
		s.t.Fatal(err)
	}
	return id
}

func (s *stack) optedOut(org, id, field string) bool {
	r, ok := s.Org(org).Get(id)
	if !ok {
		s.t.Fatalf("record %s missing in %s", id, org)
	}
	if field == tenant.StandardField {
		return r.HasOptedOutOfEmail
	}
	return r.CustomOptOut
}

func (s *stack) entry(tenantID, sc string) optout.Entry {
	it, err := s.Ledger.Get(s.Ctx, optout.Key(tenantID, sc, ""))
	e := it.Entry
	if err != nil {
		s.t.Fatalf("ledger %s/%s: %v", tenantID, sc, err)
	}
	return e
}

// folded: every given person has an entry in the ledger (their events may
// still be held unacked by a batch in flight).
func (s *stack) folded(tenantID string, scs ...string) bool {
	for _, sc := range scs {
		if _, err := s.Ledger.Get(s.Ctx, optout.Key(tenantID, sc, "")); err != nil {
			return false
		}
	}
	return true
}

// dlq returns the messages in a tenant's DLQ subject.
func (s *stack) dlq(tenantID string) []*jetstream.RawStreamMsg {
	st, err := s.Prov.JS.Stream(s.Ctx, s.Topo.DLQStream())
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(s.Ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(s.Ctx, seq)
		if err != nil {
			continue
		}
		if m.Subject == s.Topo.DLQSubject(tenantID) {
			out = append(out, m)
		}
	}
	return out
}

// writeCalls counts the org's write calls: sObject Collections updates
// (Email Opt Out) and composites (the sales field, read and written).
func (s *stack) writeCalls(org string) int {
	n := 0
	for _, c := range s.Org(org).Calls() {
		if c.Route == sandbox.RouteCollectionsUpdate || c.Route == sandbox.RouteComposite {
			n++
		}
	}
	return n
}

type jetstreamRaw = jetstream.RawStreamMsg

func natsMsg(subject string, data []byte, contentType string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set("Content-Type", contentType)
	return m
}
