package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/testsandbox"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// stack is one test's pusher, NATS namespace and Salesforce sandbox.
type stack struct {
	t        *testing.T
	ctx      context.Context
	nc       *nats.Conn
	prov     *natsx.Provisioned
	topo     natsx.Topology
	sb       *sandbox.Sandbox
	pub      natsx.Publisher
	ledger   *ledger.Ledger
	settings tenant.Store
	clients  *sfcreds.Pool
	metrics  *push.Metrics
	env      *envMap
	seq      atomic.Int64
	logs     logSink // every replica's warnings and errors
}

// logSink keeps the JSON log lines replicas write.
type logSink struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logSink) Write(p []byte) (int, error) {
	var m map[string]any
	if json.Unmarshal(p, &m) == nil {
		l.mu.Lock()
		l.lines = append(l.lines, m)
		l.mu.Unlock()
	}
	return len(p), nil
}

// count is how many lines have message msg and the tenant field t.
func (l *logSink) count(msg, t string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.lines {
		if m["message"] == msg && m["tenant"] == t {
			n++
		}
	}
	return n
}

// envMap is the credentials environment, changeable while the pusher runs.
type envMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (e *envMap) lookup(k string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.m[k]
	return v, ok
}

func (e *envMap) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[k] = v
}

var orgs = []sandbox.OrgConfig{
	{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000,
		CustomField: "Marketo_Sales_Opt_Out__c", CustomFieldInstalled: true, CustomFieldWritable: true},
	{Name: "globex", ClientID: "globex-id", ClientSecret: "globex-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000},
}

func fastConfig() push.Config {
	c := push.DefaultConfig()
	c.Workers = 4
	c.BackoffInitial = 20 * time.Millisecond
	c.BackoffMax = 300 * time.Millisecond
	c.BreakerThreshold = 3
	c.BreakerCooldown = 100 * time.Millisecond
	c.QuotaPause = 200 * time.Millisecond
	c.HealthRecheck = 200 * time.Millisecond
	c.DiscoveryInterval = 50 * time.Millisecond
	c.SweepInterval = 100 * time.Millisecond
	// A replica killed mid-call holds its persons this long.
	c.ClaimTTL = 4 * time.Second
	return c
}

func newStack(t *testing.T) *stack { return newStackWithin(t, 90*time.Second) }

// newStackWithin is newStack for a test that may run longer than 90 s.
func newStackWithin(t *testing.T, within time.Duration) *stack {
	t.Helper()
	return newStackOf(t, within, orgs)
}

// newStackOf is newStackWithin with the sandbox's orgs (one tenant each).
func newStackOf(t *testing.T, within time.Duration, orgs []sandbox.OrgConfig) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)
	topo.PusherAckWait = 2 * time.Second
	prov, err := natsx.Provision(ctx, nc, topo)
	if err != nil {
		t.Fatal(err)
	}
	sb, _, env := testsandbox.Serve(t, orgs)
	s := &stack{
		t: t, ctx: ctx, nc: nc, prov: prov, topo: topo, sb: sb,
		pub:      natsx.Publisher{JS: prov.JS, Topology: topo},
		settings: tenant.Store{KV: prov.Tenants},
		env:      &envMap{m: env},
	}
	if s.ledger, err = ledger.New(ctx, prov); err != nil {
		t.Fatal(err)
	}
	s.clients = &sfcreds.Pool{Source: sfcreds.Source{Lookup: s.env.lookup}, Refresh: 50 * time.Millisecond}
	m, err := push.NewMetrics(tel.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	s.metrics = m
	return s
}

// start runs a pusher replica until the test ends (or stop is called).
func (s *stack) start(cfg push.Config) (stop func()) {
	return s.startWith(cfg, s.clients)
}

func (s *stack) startWith(cfg push.Config, clients sfwrite.Clients) (stop func()) {
	s.t.Helper()
	return s.startIn(s.ctx, cfg, clients)
}

// startIn runs a replica until parent ends (a replica killed mid-work when
// the test cancels parent) or stop is called; opts adjust the replica
// (its clock, say).
func (s *stack) startIn(parent context.Context, cfg push.Config, clients sfwrite.Clients, opts ...func(*push.Service)) (stop func()) {
	s.t.Helper()
	cache, err := tenant.Watch(s.ctx, s.prov.Tenants)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(parent)
	svc := &push.Service{
		Cfg: cfg, JS: s.prov.JS, Topology: s.topo, Ledger: s.ledger, Settings: cache, Clients: clients,
		Health: tenant.HealthStore{KV: s.prov.Health}, Log: zerolog.New(io.MultiWriter(zerolog.NewTestWriter(s.t), &s.logs)).Level(zerolog.WarnLevel),
		Metrics: s.metrics,
	}
	for _, o := range opts {
		o(svc)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			s.t.Errorf("pusher: %v", err)
		}
	}()
	stop = func() { cancel(); <-done }
	s.t.Cleanup(stop)
	return stop
}

func (s *stack) org(name string) *sandbox.Org { return s.sb.Org(name) }

// seed adds one Contact (or Lead) to an org and returns its id.
func (s *stack) seed(org, typ string) string {
	r := s.org(org).Put(sandbox.Record{Type: typ, Email: fmt.Sprintf("p%d@example.com", s.seq.Add(1))})
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
	if _, err := eventstream.PublishEvent(s.ctx, s.pub, ev, false); err != nil {
		s.t.Fatal(err)
	}
	return id
}

// eventually polls cond until it holds or the deadline passes.
func (s *stack) eventually(what string, within time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *stack) optedOut(org, id, field string) bool {
	r, ok := s.org(org).Get(id)
	if !ok {
		s.t.Fatalf("record %s missing in %s", id, org)
	}
	if field == tenant.StandardField {
		return r.HasOptedOutOfEmail
	}
	return r.CustomOptOut
}

func (s *stack) entry(tenantID, sc string) optout.Entry {
	it, err := s.ledger.Get(s.ctx, optout.Key(tenantID, sc, ""))
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
		if _, err := s.ledger.Get(s.ctx, optout.Key(tenantID, sc, "")); err != nil {
			return false
		}
	}
	return true
}

// pendingAcks is the tenant's backlog as operators see it (eventstream.TenantBacklog):
// events delivered and not acknowledged, and events not delivered yet.
func (s *stack) pendingAcks(tenantID string) (ackPending int, undelivered uint64) {
	b, err := eventstream.TenantBacklog(s.ctx, s.prov.JS, s.topo, tenantID)
	if err != nil || !b.ConsumerExists {
		return -1, 0
	}
	return b.InFlight, b.Waiting
}

// settled: every event folded into the ledger and no person dirty.
func (s *stack) settled(tenantID string) bool {
	if !s.drained(tenantID) {
		return false
	}
	n := 0
	if err := s.ledger.Dirty(s.ctx, tenantID, func(ledger.DirtyItem) { n++ }); err != nil {
		s.t.Fatal(err)
	}
	return n == 0
}

func (s *stack) drained(tenantID string) bool {
	a, u := s.pendingAcks(tenantID)
	return a == 0 && u == 0
}

// dlq returns the messages in a tenant's DLQ subject.
func (s *stack) dlq(tenantID string) []*jetstream.RawStreamMsg {
	st, err := s.prov.JS.Stream(s.ctx, s.topo.DLQStream())
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(s.ctx, seq)
		if err != nil {
			continue
		}
		if m.Subject == s.topo.DLQSubject(tenantID) {
			out = append(out, m)
		}
	}
	return out
}

func (s *stack) setSettings(tenantID string, f func(*tenant.Settings)) {
	s.t.Helper()
	st := tenant.Default(tenantID)
	f(&st)
	if err := s.settings.Put(s.ctx, st); err != nil {
		s.t.Fatal(err)
	}
}

// writeCalls counts the org's write calls: sObject Collections updates
// (Email Opt Out) and composites (the sales field, read and written).
func (s *stack) writeCalls(org string) int {
	n := 0
	for _, c := range s.org(org).Calls() {
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
