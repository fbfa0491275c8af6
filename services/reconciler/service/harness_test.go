package service_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/optout-sync/optout-sync/internal/testsandbox"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// fakeClock is the injected clock of schedules (never slept on).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// harness is one test's NATS namespace, Redis prefix and Salesforce sandbox.
type harness struct {
	t        *testing.T
	ctx      context.Context
	nc       *nats.Conn
	prov     *natsx.Provisioned
	topo     natsx.Topology
	sb       *sandbox.Sandbox
	env      map[string]string
	prefix   string
	ledger   *ledger.Ledger
	store    runs.Store
	settings tenant.Store
	cache    *tenant.Cache
	tel      *telemetry.TestProviders
}

func newHarness(t *testing.T, orgNames ...string) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	nc := natstest.Connect(t)
	prov := natstest.Provision(t, nc)
	var orgs []sandbox.OrgConfig
	for _, name := range orgNames {
		orgs = append(orgs, sandbox.OrgConfig{Name: name, ClientID: name + "-id", ClientSecret: name + "-secret",
			APIVersions: []string{"62.0"}, DailyAPILimit: 1_000_000,
			CustomField: tenant.DefaultCustomField, CustomFieldInstalled: true, CustomFieldWritable: true})
	}
	sb, _, env := testsandbox.Serve(t, orgs)
	cache, err := tenant.Watch(ctx, prov.Tenants)
	if err != nil {
		t.Fatal(err)
	}
	tel := telemetry.NewForTest()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	lg, err := ledger.New(ctx, prov)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{
		ledger: lg,
		t:      t, ctx: ctx, nc: nc, prov: prov, topo: prov.Topology, sb: sb, env: env,
		prefix:   locktest.Prefix(t),
		store:    runs.Store{KV: prov.Runs},
		settings: tenant.Store{KV: prov.Tenants},
		cache:    cache,
		tel:      tel,
	}
}

func (h *harness) org(name string) *sandbox.Org { return h.sb.Org(name) }

// setSettings stores a tenant's settings and waits until the replicas'
// cache shows them.
func (h *harness) setSettings(t string, f func(*tenant.Settings)) tenant.Settings {
	h.t.Helper()
	st := tenant.Default(t)
	st.SyncEnabled = true
	if f != nil {
		f(&st)
	}
	if err := h.settings.Put(h.ctx, st); err != nil {
		h.t.Fatal(err)
	}
	h.eventually("settings of "+t+" in the cache", func() bool { return h.cache.Get(t) == st })
	return st
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replicaOpts shape one simulated reconciler replica.
type replicaOpts struct {
	name          string
	ttl, renew    time.Duration
	clock         *fakeClock
	hooks         engine.Hooks
	cfg           func(*engine.Config)
	rdb           *redis.Client
	maxConcurrent int
}

func testConfig() engine.Config {
	c := engine.DefaultConfig()
	c.Read.BulkPollInitial, c.Read.BulkPollMax = 5*time.Millisecond, 50*time.Millisecond
	c.WriteBackoff, c.RetryBackoff = 5*time.Millisecond, 20*time.Millisecond
	c.LedgerWorkers = 4
	return c
}

// replica builds a reconciler replica with its own Redis connection, lease
// locker and Salesforce clients (whose calls the sandbox logs under the
// replica's name).
func (h *harness) replica(o replicaOpts) *service.Service {
	h.t.Helper()
	if o.ttl == 0 {
		o.ttl = 5 * time.Second
	}
	if o.rdb == nil {
		o.rdb = locktest.Client(h.t)
	}
	locker, err := lock.New(o.rdb, lock.Options{Prefix: h.prefix, TTL: o.ttl, RenewEvery: o.renew})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := testConfig()
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	metrics, err := engine.NewMetrics(h.tel.MeterProvider)
	if err != nil {
		h.t.Fatal(err)
	}
	env := h.env
	pool := &sfcreds.Pool{
		Source:  sfcreds.Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }},
		Refresh: time.Hour,
		Configure: func(c *salesforce.Config) {
			c.Transport = budget.Transport{}
			c.CallClient = o.name
			c.TracerProvider = h.tel.TracerProvider
		},
	}
	var now func() time.Time
	if o.clock != nil {
		now = o.clock.Now
	}
	log := zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel).With().Str("replica", o.name).Logger()
	eng := &engine.Engine{
		Cfg: cfg, Ledger: h.ledger, Runs: h.store,
		Publisher: natsx.Publisher{JS: h.prov.JS, Topology: h.topo}, Topology: h.topo,
		Clients: pool, Tracer: h.tel.Tracer("reconciler-test"), Metrics: metrics, Log: log,
		Holder: o.name, Now: now, Hooks: o.hooks,
	}
	return &service.Service{
		Engine: eng, Locker: locker, Runs: h.store, Settings: h.cache, NC: h.nc, Topology: h.topo,
		Replica: o.name, Log: log, Now: now, Tick: time.Minute, MaxConcurrent: o.maxConcurrent,
	}
}

// runNow starts a manual run on svc and waits for it.
func (h *harness) runNow(svc *service.Service, t string, dry bool) runs.Report {
	h.t.Helper()
	rep := svc.Trigger(h.ctx, t, runs.ControlRequest{DryRun: dry, By: "test"}, noSpan)
	if !rep.Accepted {
		h.t.Fatalf("run of %s refused: %+v", t, rep)
	}
	svc.Wait()
	return h.report(t, rep.RunID)
}

func (h *harness) report(t, runID string) runs.Report {
	h.t.Helper()
	r, err := h.store.Report(h.ctx, t, runID)
	if err != nil {
		h.t.Fatalf("report %s/%s: %v", t, runID, err)
	}
	return r
}

// putEntry writes a ledger entry as the pusher would have.
func (h *harness) putEntry(key string, e optout.Entry) {
	h.t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.prov.Ledger.Put(h.ctx, key, data); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) entry(key string) (optout.Entry, uint64) {
	h.t.Helper()
	it, err := h.ledger.Get(h.ctx, key)
	if err != nil {
		h.t.Fatalf("ledger %s: %v", key, err)
	}
	return it.Entry, it.Fence
}

// appliedEvents returns the events on a tenant's applied subject, checked
// against the wire contract, with their headers.
func (h *harness) appliedEvents(t string) ([]*optoutv1.OptOutEvent, []nats.Header) {
	h.t.Helper()
	st, err := h.prov.JS.Stream(h.ctx, h.topo.AppliedStream())
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var evs []*optoutv1.OptOutEvent
	var hdrs []nats.Header
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(h.ctx, seq)
		if err != nil || m.Subject != h.topo.AppliedSubject(t) {
			continue
		}
		ev := &optoutv1.OptOutEvent{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			h.t.Fatalf("applied event %d: %v", seq, err)
		}
		if err := event.Validate(ev, time.Now()); err != nil {
			h.t.Fatalf("applied event %s breaks the contract: %v", ev.GetEventId(), err)
		}
		evs = append(evs, ev)
		hdrs = append(hdrs, m.Header)
	}
	return evs, hdrs
}

// sfWrites counts the collection updates a replica sent to an org.
func (h *harness) sfWrites(org, replica string) int {
	n := 0
	for _, c := range h.org(org).Calls() {
		if c.Route == sandbox.RouteCollectionsUpdate && (replica == "" || c.Client == replica) {
			n++
		}
	}
	return n
}

// fencedEntries counts ledger entries of a tenant last written with fence.
func (h *harness) fencedEntries(t string, fence uint64) int {
	n := 0
	if err := h.ledger.Scan(h.ctx, t, func(it ledger.ScanItem) error {
		if it.Fence == fence {
			n++
		}
		return nil
	}, nil); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// ledgerRevisions maps every key of a tenant to its revision.
func (h *harness) ledgerRevisions(t string) map[string]uint64 {
	out := map[string]uint64{}
	if err := h.ledger.Scan(h.ctx, t, func(it ledger.ScanItem) error { out[it.Key] = it.Revision; return nil }, nil); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) streamMsgs(stream string) uint64 {
	s, err := h.prov.JS.Stream(h.ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

// history returns a tenant's reports, oldest first.
func (h *harness) history(t string) []runs.Report {
	h.t.Helper()
	hist, err := h.store.History(h.ctx, t, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	for i, j := 0, len(hist)-1; i < j; i, j = i+1, j-1 {
		hist[i], hist[j] = hist[j], hist[i]
	}
	return hist
}
