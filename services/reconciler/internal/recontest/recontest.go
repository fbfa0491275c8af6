// Package recontest is the reconciler's test harness, written once for the
// engine's tests and the service's: each test's own NATS namespace, Redis
// key prefix and in-process Salesforce sandbox, engines built against them,
// a scenario seeding one person of every class of the diff, and hooks that
// pause or stop a run. Every test that uses it needs NATS and Redis and is
// skipped under -short.
package recontest

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

	"github.com/optout-sync/optout-sync/internal/teststack"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
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

// FakeClock is the injected clock of schedules (never slept on).
type FakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// Now returns the time last set.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Harness is one test's NATS namespace, Redis prefix and Salesforce
// sandbox: the shared test stack (internal/teststack) with the run store,
// a settings cache and telemetry.
type Harness struct {
	*teststack.Stack
	T      *testing.T
	Prefix string // the test's Redis key prefix
	Store  runs.Store
	Cache  *tenant.Cache
	Tel    *telemetry.TestProviders
}

// New connects to NATS (skipping the test under -short), provisions a fresh
// namespace and serves a sandbox with one org per name.
func New(t *testing.T, orgNames ...string) *Harness {
	t.Helper()
	var orgs []sandbox.OrgConfig
	for _, name := range orgNames {
		orgs = append(orgs, sandbox.OrgConfig{Name: name, ClientID: name + "-id", ClientSecret: name + "-secret",
			APIVersions: []string{"62.0"}, DailyAPILimit: 1_000_000,
			CustomField: tenant.DefaultCustomField, CustomFieldInstalled: true, CustomFieldWritable: true})
	}
	st := teststack.New(t, orgs, teststack.Options{Within: 90 * time.Second})
	tel := telemetry.NewForTest()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return &Harness{
		Stack:  st,
		T:      t,
		Prefix: locktest.Prefix(t),
		Store:  runs.Store{KV: st.Prov.Runs},
		Cache:  st.WatchSettings(),
		Tel:    tel,
	}
}

// SetSettings stores a tenant's settings (sync enabled, then f) and waits
// until the replicas' cache shows them.
func (h *Harness) SetSettings(t string, f func(*tenant.Settings)) tenant.Settings {
	h.T.Helper()
	st := tenant.Default(t)
	st.SyncEnabled = true
	if f != nil {
		f(&st)
	}
	if err := h.Settings.Put(h.Ctx, st); err != nil {
		h.T.Fatal(err)
	}
	h.Eventually("settings of "+t+" in the cache", func() bool { return h.Cache.Get(t) == st })
	return st
}

// Eventually waits for cond (a condition, not a time: the deadline only
// ends a test that would otherwise hang).
func (h *Harness) Eventually(what string, cond func() bool) {
	h.T.Helper()
	h.Stack.Eventually(what, 60*time.Second, cond)
}

// ReplicaOpts shape one simulated reconciler replica.
type ReplicaOpts struct {
	Name       string
	TTL, Renew time.Duration // of its lease (default TTL 5s)
	Clock      *FakeClock
	Hooks      engine.Hooks
	Cfg        func(*engine.Config)
	RDB        *redis.Client // its own Redis connection (default a new one)
}

// TestConfig is the engine's tuning for tests: short polls and backoffs.
func TestConfig() engine.Config {
	c := engine.DefaultConfig()
	c.Read.BulkPollInitial, c.Read.BulkPollMax = 5*time.Millisecond, 50*time.Millisecond
	c.WriteBackoff, c.RetryBackoff = 5*time.Millisecond, 20*time.Millisecond
	c.LedgerWorkers = 4
	return c
}

// Now is the replica's clock (nil: the real one).
func (o ReplicaOpts) Now() func() time.Time {
	if o.Clock != nil {
		return o.Clock.Now
	}
	return nil
}

// Log is the replica's test logger (warnings and up).
func (h *Harness) Log(o ReplicaOpts) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(h.T)).Level(zerolog.WarnLevel).With().Str("replica", o.Name).Logger()
}

// Locker builds a replica's lease locker on its own Redis connection.
func (h *Harness) Locker(o ReplicaOpts) *lock.Locker {
	h.T.Helper()
	if o.TTL == 0 {
		o.TTL = 5 * time.Second
	}
	rdb := o.RDB
	if rdb == nil {
		rdb = locktest.Client(h.T)
	}
	locker, err := lock.New(rdb, lock.Options{Prefix: h.Prefix, TTL: o.TTL, RenewEvery: o.Renew})
	if err != nil {
		h.T.Fatal(err)
	}
	return locker
}

// Engine builds a replica's engine with its own Salesforce clients, whose
// calls the sandbox logs under the replica's name.
func (h *Harness) Engine(o ReplicaOpts) *engine.Engine {
	h.T.Helper()
	cfg := TestConfig()
	if o.Cfg != nil {
		o.Cfg(&cfg)
	}
	metrics, err := engine.NewMetrics(h.Tel.MeterProvider)
	if err != nil {
		h.T.Fatal(err)
	}
	pool := &sfcreds.Pool{
		Source:  h.SFSource(),
		Refresh: time.Hour,
		Configure: func(c *salesforce.Config) {
			c.Transport = budget.Transport{}
			c.CallClient = o.Name
			c.TracerProvider = h.Tel.TracerProvider
		},
	}
	return &engine.Engine{
		Cfg: cfg, Ledger: h.Ledger, Runs: h.Store,
		Publisher: natsx.Publisher{JS: h.Prov.JS, Topology: h.Topo}, Topology: h.Topo,
		Clients: pool, Tracer: h.Tel.Tracer("reconciler-test"), Metrics: metrics, Log: h.Log(o),
		Holder: o.Name, Now: o.Now(), Hooks: o.Hooks,
	}
}

// Report reads a run's report.
func (h *Harness) Report(t, runID string) runs.Report {
	h.T.Helper()
	r, err := h.Store.Report(h.Ctx, t, runID)
	if err != nil {
		h.T.Fatalf("report %s/%s: %v", t, runID, err)
	}
	return r
}

// WaitFinal waits until a run's report has a final status.
func (h *Harness) WaitFinal(tn, runID string) runs.Report {
	h.T.Helper()
	var rep runs.Report
	h.Eventually("run "+runID+" finished", func() bool {
		r, err := h.Store.Report(h.Ctx, tn, runID)
		rep = r
		return err == nil && r.Status.Final()
	})
	return rep
}

// PutEntry writes a ledger entry as the pusher would have.
func (h *Harness) PutEntry(key string, e optout.Entry) {
	h.T.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		h.T.Fatal(err)
	}
	if _, err := h.Prov.Ledger.Put(h.Ctx, key, data); err != nil {
		h.T.Fatal(err)
	}
}

// Entry reads a ledger entry and the fence it was last written with.
func (h *Harness) Entry(key string) (optout.Entry, uint64) {
	h.T.Helper()
	it, err := h.Ledger.Get(h.Ctx, key)
	if err != nil {
		h.T.Fatalf("ledger %s: %v", key, err)
	}
	return it.Entry, it.Fence
}

// AppliedEvents returns the events on a tenant's applied subject, checked
// against the wire contract, with their headers.
func (h *Harness) AppliedEvents(t string) ([]*optoutv1.OptOutEvent, []nats.Header) {
	h.T.Helper()
	st, err := h.Prov.JS.Stream(h.Ctx, h.Topo.AppliedStream())
	if err != nil {
		h.T.Fatal(err)
	}
	info, err := st.Info(h.Ctx)
	if err != nil {
		h.T.Fatal(err)
	}
	var evs []*optoutv1.OptOutEvent
	var hdrs []nats.Header
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(h.Ctx, seq)
		if err != nil || m.Subject != h.Topo.AppliedSubject(t) {
			continue
		}
		ev := &optoutv1.OptOutEvent{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			h.T.Fatalf("applied event %d: %v", seq, err)
		}
		if err := event.Validate(ev, time.Now()); err != nil {
			h.T.Fatalf("applied event %s breaks the contract: %v", ev.GetEventId(), err)
		}
		evs = append(evs, ev)
		hdrs = append(hdrs, m.Header)
	}
	return evs, hdrs
}

// SFWrites counts the collection updates a replica ("" any) sent to an org.
func (h *Harness) SFWrites(org, replica string) int {
	n := 0
	for _, c := range h.Org(org).Calls() {
		if c.Route == sandbox.RouteCollectionsUpdate && (replica == "" || c.Client == replica) {
			n++
		}
	}
	return n
}

// FencedEntries counts ledger entries of a tenant last written with fence.
func (h *Harness) FencedEntries(t string, fence uint64) int {
	n := 0
	if err := h.Ledger.Scan(h.Ctx, t, func(it ledger.ScanItem) error {
		if it.Fence == fence {
			n++
		}
		return nil
	}, nil); err != nil {
		h.T.Fatal(err)
	}
	return n
}

// LedgerRevisions maps every key of a tenant to its revision.
func (h *Harness) LedgerRevisions(t string) map[string]uint64 {
	out := map[string]uint64{}
	if err := h.Ledger.Scan(h.Ctx, t, func(it ledger.ScanItem) error { out[it.Key] = it.Revision; return nil }, nil); err != nil {
		h.T.Fatal(err)
	}
	return out
}

// StreamMsgs counts the messages of a stream.
func (h *Harness) StreamMsgs(stream string) uint64 {
	s, err := h.Prov.JS.Stream(h.Ctx, stream)
	if err != nil {
		h.T.Fatal(err)
	}
	info, err := s.Info(h.Ctx)
	if err != nil {
		h.T.Fatal(err)
	}
	return info.State.Msgs
}

// History returns a tenant's reports, oldest first.
func (h *Harness) History(t string) []runs.Report {
	h.T.Helper()
	hist, err := h.Store.History(h.Ctx, t, 0)
	if err != nil {
		h.T.Fatal(err)
	}
	for i, j := 0, len(hist)-1; i < j; i, j = i+1, j-1 {
		hist[i], hist[j] = hist[j], hist[i]
	}
	return hist
}
