package service_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// pauseHook freezes a replica's Redis commands (its lease renewals) while
// paused, ignoring their contexts, as a stopped process would.
type pauseHook struct {
	paused atomic.Bool
	gate   chan struct{}
	once   sync.Once
}

func newPauseHook() *pauseHook { return &pauseHook{gate: make(chan struct{})} }

func (p *pauseHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pauseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if p.paused.Load() {
			<-p.gate
		}
		return next(ctx, cmd)
	}
}
func (p *pauseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (p *pauseHook) resume() { p.once.Do(func() { p.paused.Store(false); close(p.gate) }) }

// stopAt returns hooks that block a run at the n-th time it reaches point
// until release is closed, and report "interrupted" with whether the run
// still believed it held its lease then.
type stopAt struct {
	point       string
	n           int
	hits        atomic.Int32
	reached     chan struct{}
	release     chan struct{}
	once        sync.Once
	interrupted chan bool // the lease context's state when the run stopped
}

// let releases the run (idempotent, so a failing test's cleanup can too).
func (s *stopAt) let() { s.once.Do(func() { close(s.release) }) }

func newStopAt(point string, n int) *stopAt {
	return &stopAt{point: point, n: n, reached: make(chan struct{}), release: make(chan struct{}), interrupted: make(chan bool, 1)}
}

func (s *stopAt) hooks() engine.Hooks {
	return engine.Hooks{At: func(ctx context.Context, point string) {
		switch {
		case point == s.point && int(s.hits.Add(1)) == s.n:
			close(s.reached)
			<-s.release
		case point == "interrupted":
			select {
			case s.interrupted <- ctx.Err() == nil:
			default:
			}
		}
	}}
}

// takeOver has replica b resume the tenant's run as soon as the lease is
// free, and waits for it.
func takeOver(h *harness, b *service.Service, tn, runID string) runs.Report {
	h.t.Helper()
	var rep runs.ControlReply
	h.eventually("replica-b resumes the run", func() bool {
		rep = b.Trigger(h.ctx, tn, runs.ControlRequest{By: "test"}, noSpan)
		return rep.Accepted
	})
	if !rep.Resumed || rep.RunID != runID {
		h.t.Fatalf("replica-b %+v; want it to resume run %s", rep, runID)
	}
	b.Wait()
	return h.report(tn, runID)
}

func TestLeaseLostMidRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		variant string // how the lease is lost
		point   string // where the old holder stands when it is
	}{
		{"lease deleted", "after-diff"},
		{"holder paused past the lease", "after-diff"},
		// Its ledger writes done, the old holder resumes right before a
		// Salesforce write, which only the fence check stops.
		{"holder paused past the lease", "before-sf-batch"},
	} {
		t.Run(tc.variant+"@"+tc.point, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "acme")
			s := h.seed("acme", false, tenant.PolicyOptOutWins)
			pause := newPauseHook()
			rdbA := locktest.Client(t)
			rdbA.AddHook(pause)
			stop := newStopAt(tc.point, 1)
			a := h.replica(replicaOpts{name: "replica-a", ttl: time.Second, renew: 100 * time.Millisecond, rdb: rdbA, hooks: stop.hooks()})
			b := h.replica(replicaOpts{name: "replica-b"})
			t.Cleanup(func() { stop.let(); pause.resume() })

			started := a.Trigger(h.ctx, "acme", runs.ControlRequest{By: "test"}, noSpan)
			if !started.Accepted {
				t.Fatalf("replica-a refused: %+v", started)
			}
			<-stop.reached
			// Progress of the running run is readable meanwhile.
			cp, err := h.store.Active(h.ctx, "acme")
			if err != nil || !cp.DiffComplete || cp.Report.Counts != s.wantCounts() || cp.Report.Holder != "replica-a" {
				t.Fatalf("progress %+v, %v", cp, err)
			}
			fenceA := cp.Report.Fence
			// What the old holder legitimately wrote while it held the lease.
			entriesA, sfA := h.fencedEntries("acme", fenceA), h.sfWrites("acme", "replica-a")

			if tc.variant == "lease deleted" {
				if err := rdbA.Del(h.ctx, h.prefix+"{acme}:lease").Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				pause.paused.Store(true) // A's watchdog freezes: A never learns it lost the lease
			}
			rep := takeOver(h, b, "acme", started.RunID)
			if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 || rep.Holder != "replica-b" || rep.Fence <= fenceA {
				t.Fatalf("final report: %s (%s), attempts %d, holder %s, fence %d (A had %d)",
					rep.Status, rep.Reason, rep.Attempts, rep.Holder, rep.Fence, fenceA)
			}
			if rep.Counts != s.wantCounts() || rep.Writes.SalesforceWritten != 4 {
				t.Fatalf("final report %+v %+v", rep.Counts, rep.Writes)
			}

			// The old holder resumes; it must write nothing more.
			stop.let()
			stillBelieved := <-stop.interrupted
			if tc.variant != "lease deleted" && !stillBelieved {
				t.Fatal("the paused holder knew it lost the lease; the test meant to show the fence stopping it")
			}
			pause.resume()
			a.Wait()
			if n := h.sfWrites("acme", "replica-a"); n != sfA {
				t.Errorf("the old holder made %d Salesforce writes after losing its lease", n-sfA)
			}
			if n := h.fencedEntries("acme", fenceA); n > entriesA {
				t.Errorf("the old holder wrote %d ledger entries after losing its lease", n-entriesA)
			}
			_, hdrs := h.appliedEvents("acme")
			if n := len(hdrs); n != 2 {
				t.Errorf("%d applied events; want 2", n)
			}
			final := h.report("acme", started.RunID)
			if final.Holder != "replica-b" || final.Status != runs.StatusSucceeded {
				t.Errorf("the old holder overwrote the report: %+v", final)
			}
			s.checkFinal()
		})
	}
}

// A run killed at any point (its Redis connection gone: no renewals, no
// release) is resumed by another replica once the lease expires and ends
// as an uninterrupted run: same state on both sides, same counts and writes.
func TestKilledRunResumesWithTheSameResult(t *testing.T) {
	t.Parallel()
	for _, at := range []struct {
		point string
		n     int
	}{
		{"after-read", 1}, {"after-diff", 1}, {"before-ledger-batch", 2}, {"before-sf-batch", 2}, {"before-finish", 1},
	} {
		t.Run(fmt.Sprintf("%s#%d", at.point, at.n), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "acme")
			s := h.seed("acme", false, tenant.PolicyOptOutWins)
			rdbA := locktest.Client(t)
			var once sync.Once
			var hits atomic.Int32
			small := func(c *engine.Config) { c.LedgerBatch, c.WriteBatch = 2, 2 }
			crash := engine.Hooks{At: func(ctx context.Context, point string) {
				if point == at.point && int(hits.Add(1)) == at.n {
					once.Do(func() { _ = rdbA.Close() }) // the process is gone: no renewal, no release
					<-ctx.Done()
				}
			}}
			a := h.replica(replicaOpts{name: "replica-a", ttl: time.Second, renew: 100 * time.Millisecond, rdb: rdbA, hooks: crash, cfg: small})
			b := h.replica(replicaOpts{name: "replica-b", cfg: small})
			started := a.Trigger(h.ctx, "acme", runs.ControlRequest{By: "test"}, noSpan)
			if !started.Accepted {
				t.Fatalf("replica-a refused: %+v", started)
			}
			a.Wait()
			if hits.Load() < int32(at.n) {
				t.Fatalf("the run never reached %s#%d", at.point, at.n)
			}
			rep := takeOver(h, b, "acme", started.RunID)
			if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 {
				t.Fatalf("resumed run: %s (%s), attempts %d", rep.Status, rep.Reason, rep.Attempts)
			}
			if rep.Counts != s.wantCounts() {
				t.Errorf("counts\n got %+v\nwant %+v", rep.Counts, s.wantCounts())
			}
			if w := rep.Writes; w.SalesforceWritten != 4 || w.PlannedSalesforce != 4 || w.EventsPublished != 2 || w.Remaining != 0 {
				t.Errorf("writes %+v; want the 4 records and 2 events of an uninterrupted run", w)
			}
			s.checkFinal()
			if strings.Contains(at.point, "sf") && h.sfWrites("acme", "replica-a") == 0 {
				t.Error("the first attempt wrote nothing before the crash; the test does not cover a partial write")
			}
		})
	}
}
