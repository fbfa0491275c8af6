// Package recontest is the reconciler's test harness, written once for the
// engine's tests and the service's: each test's own NATS namespace, Redis
// key prefix and in-process Salesforce sandbox, engines built against them,
// a scenario seeding one person of every class of the diff, and hooks that
// pause or stop a run. Every test that uses it needs NATS and Redis and is
// skipped under -short.
package recontest

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/internal/teststack/reconstack"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
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
// sandbox: the shared test stack (internal/teststack) with what the
// reconciler's replicas share (internal/teststack/reconstack).
type Harness struct {
	*reconstack.Stack
	T *testing.T
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
	return &Harness{Stack: reconstack.New(t, st), T: t}
}

// SetSettings stores a tenant's settings (sync enabled, then f) and waits
// until the replicas' cache shows them.
func (h *Harness) SetSettings(t string, f func(*tenant.Settings)) tenant.Settings {
	h.T.Helper()
	st := h.PutSettings(t, func(st *tenant.Settings) {
		st.SyncEnabled = true
		if f != nil {
			f(st)
		}
	})
	h.WaitSettings(st)
	return st
}

// Eventually waits for cond (a condition, not a time: the deadline only
// ends a test that would otherwise hang).
func (h *Harness) Eventually(what string, cond func() bool) {
	h.T.Helper()
	h.Stack.Eventually(what, 60*time.Second, cond)
}

// ReplicaOpts shape one simulated reconciler replica: reconstack's, with
// its clock a FakeClock.
type ReplicaOpts struct {
	Name       string
	TTL, Renew time.Duration // of its lease (default TTL 5s)
	Clock      *FakeClock
	Hooks      engine.Hooks
	Cfg        func(*engine.Config)
	RDB        *redis.Client // its own Redis connection (default a new one)
}

// Options are the replica's reconstack options: the harness builds its
// engine (Engine), lease locker (Locker) or whole service (Service) from
// them.
func (o ReplicaOpts) Options() reconstack.Options {
	r := reconstack.Options{Name: o.Name, TTL: o.TTL, Renew: o.Renew, RDB: o.RDB, Hooks: o.Hooks, Cfg: o.Cfg}
	if o.Clock != nil {
		r.Now = o.Clock.Now
	}
	return r
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
