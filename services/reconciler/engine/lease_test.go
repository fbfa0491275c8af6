package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

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
			s := h.Seed("acme", false, tenant.PolicyOptOutWins)
			pause := recontest.NewPauseHook()
			rdbA := locktest.Client(t)
			rdbA.AddHook(pause)
			stop := recontest.NewStopAt(tc.point, 1)
			a := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: stop.Hooks()})
			b := h.replica(recontest.ReplicaOpts{Name: "replica-b"})
			t.Cleanup(func() { stop.Let(); pause.Resume() })

			started := a.start("acme", false)
			if started == "" {
				t.Fatal("replica-a refused: the lease is held")
			}
			<-stop.Reached
			// Progress of the running run is readable meanwhile.
			cp, err := h.Store.Active(h.Ctx, "acme")
			if err != nil || !cp.DiffComplete || cp.Report.Counts != s.WantCounts() || cp.Report.Holder != "replica-a" {
				t.Fatalf("progress %+v, %v", cp, err)
			}
			fenceA := cp.Report.Fence
			// What the old holder legitimately wrote while it held the lease.
			entriesA, sfA := h.FencedEntries("acme", fenceA), h.SFWrites("acme", "replica-a")

			if tc.variant == "lease deleted" {
				if err := rdbA.Del(h.Ctx, h.Prefix+"{acme}:lease").Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				pause.Paused.Store(true) // A's watchdog freezes: A never learns it lost the lease
			}
			rep := takeOver(h, b, "acme", started)
			if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 || rep.Holder != "replica-b" || rep.Fence <= fenceA {
				t.Fatalf("final report: %s (%s), attempts %d, holder %s, fence %d (A had %d)",
					rep.Status, rep.Reason, rep.Attempts, rep.Holder, rep.Fence, fenceA)
			}
			if rep.Counts != s.WantCounts() || rep.Writes.SalesforceWritten != 4 {
				t.Fatalf("final report %+v %+v", rep.Counts, rep.Writes)
			}

			// The old holder resumes; it must write nothing more.
			stop.Let()
			stillBelieved := <-stop.Interrupted
			if tc.variant != "lease deleted" && !stillBelieved {
				t.Fatal("the paused holder knew it lost the lease; the test meant to show the fence stopping it")
			}
			pause.Resume()
			a.wait()
			if n := h.SFWrites("acme", "replica-a"); n != sfA {
				t.Errorf("the old holder made %d Salesforce writes after losing its lease", n-sfA)
			}
			if n := h.FencedEntries("acme", fenceA); n > entriesA {
				t.Errorf("the old holder wrote %d ledger entries after losing its lease", n-entriesA)
			}
			_, hdrs := h.AppliedEvents("acme")
			if n := len(hdrs); n != 2 {
				t.Errorf("%d applied events; want 2", n)
			}
			final := h.Report("acme", started)
			if final.Holder != "replica-b" || final.Status != runs.StatusSucceeded {
				t.Errorf("the old holder overwrote the report: %+v", final)
			}
			s.CheckFinal()
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
			s := h.Seed("acme", false, tenant.PolicyOptOutWins)
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
			a := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: crash, Cfg: small})
			b := h.replica(recontest.ReplicaOpts{Name: "replica-b", Cfg: small})
			started := a.start("acme", false)
			if started == "" {
				t.Fatal("replica-a refused: the lease is held")
			}
			a.wait()
			if hits.Load() < int32(at.n) {
				t.Fatalf("the run never reached %s#%d", at.point, at.n)
			}
			rep := takeOver(h, b, "acme", started)
			if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 {
				t.Fatalf("resumed run: %s (%s), attempts %d", rep.Status, rep.Reason, rep.Attempts)
			}
			if rep.Counts != s.WantCounts() {
				t.Errorf("counts\n got %+v\nwant %+v", rep.Counts, s.WantCounts())
			}
			if w := rep.Writes; w.SalesforceWritten != 4 || w.PlannedSalesforce != 4 || w.EventsPublished != 2 || w.Remaining != 0 {
				t.Errorf("writes %+v; want the 4 records and 2 events of an uninterrupted run", w)
			}
			s.CheckFinal()
			if strings.Contains(at.point, "sf") && h.SFWrites("acme", "replica-a") == 0 {
				t.Error("the first attempt wrote nothing before the crash; the test does not cover a partial write")
			}
		})
	}
}
