package engine_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
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
			h, s, b, started := killedRun(t, at.point, at.n)
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

// A holder paused past its lease (by an engine hook, its lease renewals
// frozen) while another replica takes the tenant and finishes the run writes
// nothing after it resumes: no Salesforce call, no ledger change, no applied
// event; and a resubscribe made after its diff stands.
func TestAHolderPausedPastItsLeaseWritesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		point string
		// resubscribe is made while A is paused, for the person whose
		// write A holds; it returns that person.
		resubscribe func(h *harness, s *recontest.Scenario) string
	}{
		// A holds the Salesforce write of sconly; sconly resubscribes in
		// Sales Connect (a real event, folded by B's run).
		{"before-sf-batch", func(h *harness, s *recontest.Scenario) string {
			h.PublishEvent(s.Tenant, "evt-sconly-resub", "sc-sconly", s.IDs["sconly"], optoutv1.Action_RESUBSCRIBE, time.Now().Add(-time.Second))
			return "sconly"
		}},
		// A holds the applied event (then the ledger write) of sfonly, opted
		// out in Salesforce only; a Salesforce user clears the field.
		{"before-applied", sfResubscribe},
		{"before-ledger-write", sfResubscribe},
	} {
		t.Run(tc.point, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "acme")
			s := h.Seed("acme", true, tenant.PolicyOptOutWins) // the sales field: a resubscribe clears the wish
			pause := recontest.NewPauseHook()
			rdbA := locktest.Client(t)
			rdbA.AddHook(pause)
			stop := recontest.NewStopAt(tc.point, 1)
			// One ledger worker, so nothing of A moves while it is paused.
			one := func(c *engine.Config) { c.LedgerWorkers = 1 }
			a := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: stop.Hooks(), Cfg: one})
			b := h.replica(recontest.ReplicaOpts{Name: "replica-b"})
			t.Cleanup(func() { stop.Let(); pause.Resume() })

			started := a.start("acme", false)
			if started == "" {
				t.Fatal("replica-a refused: the lease is held")
			}
			<-stop.Reached
			cp, err := h.Store.Active(h.Ctx, "acme")
			if err != nil || !cp.DiffComplete || cp.Report.Holder != "replica-a" {
				t.Fatalf("progress %+v, %v", cp, err)
			}
			fenceA := cp.Report.Fence
			pause.Paused.Store(true) // A's watchdog freezes: A never learns it lost the lease

			who := tc.resubscribe(h, s)
			rep := takeOver(h, b, "acme", started)
			if rep.Status != runs.StatusSucceeded || rep.Holder != "replica-b" || rep.Fence <= fenceA {
				t.Fatalf("replica-b's report: %s (%s), holder %s, fence %d (A had %d)", rep.Status, rep.Reason, rep.Holder, rep.Fence, fenceA)
			}
			// What stands before A resumes.
			revs := h.LedgerRevisions("acme")
			entriesA := h.FencedEntries("acme", fenceA)
			appliedA := appliedWithFence(h, fenceA)

			resumedAt := time.Now()
			stop.Let()
			if stillBelieved := <-stop.Interrupted; !stillBelieved {
				t.Fatal("the paused holder knew it lost the lease; the test meant the commit checks to stop it")
			}
			pause.Resume()
			a.wait()

			for _, c := range h.Org("acme").Calls() {
				if c.Route == sandbox.RouteCollectionsUpdate && c.Client == "replica-a" && !c.At.Before(resumedAt) {
					t.Errorf("replica-a wrote %d records to Salesforce after it resumed (%s)", c.Records, c.At)
				}
			}
			for key, rev := range h.LedgerRevisions("acme") {
				if revs[key] != rev {
					_, fence := h.Entry(key)
					t.Errorf("ledger %s changed after replica-a resumed (revision %d → %d, fence %d; A's %d)", key, revs[key], rev, fence, fenceA)
				}
			}
			if n := h.FencedEntries("acme", fenceA); n > entriesA {
				t.Errorf("%d more ledger entries carry replica-a's fence after it resumed", n-entriesA)
			}
			if n := appliedWithFence(h, fenceA); n != appliedA {
				t.Errorf("replica-a published %d applied events after it resumed", n-appliedA)
			}

			// The resubscribe stands on both sides.
			if s.SFValue(who) {
				t.Errorf("Salesforce %s: %s is true; the resubscribe was reverted", who, s.Field)
			}
			if e, _ := h.Entry(s.Keys[who]); e.OptedOut {
				t.Errorf("ledger %s: opted out again (decided by %s); the resubscribe was reverted", who, e.DecidedBy)
			}
			if final := h.Report("acme", started); final.Holder != "replica-b" || final.Status != runs.StatusSucceeded {
				t.Errorf("the old holder overwrote the report: %s by %s", final.Status, final.Holder)
			}
		})
	}
}

// sfResubscribe: a Salesforce user clears the sales field of sfonly.
func sfResubscribe(h *harness, s *recontest.Scenario) string {
	h.T.Helper()
	if err := h.Org(s.Tenant).Edit(s.IDs["sfonly"], func(r *sandbox.Record) { r.CustomOptOut = false }); err != nil {
		h.T.Fatal(err)
	}
	return "sfonly"
}

// appliedWithFence counts the tenant's applied events published under fence.
func appliedWithFence(h *harness, fence uint64) int {
	_, hdrs := h.AppliedEvents("acme")
	n := 0
	for _, hd := range hdrs {
		if hd.Get(engine.HeaderFence) == strconv.FormatUint(fence, 10) && hd.Get(engine.HeaderRun) != "" {
			n++
		}
	}
	return n
}
