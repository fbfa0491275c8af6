package engine_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// The nightly run with the pusher stopped: the opt-outs published meanwhile
// are folded into the ledger and reach Salesforce; a dry run says
// incomplete (how many wait, since when), never a silent succeeded.
func TestNightlyRunWithThePusherStoppedFoldsWaitingEvents(t *testing.T) {
	t.Parallel()
	const n = 100

	t.Run("folded and written", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, "acme")
		h.SetSettings("acme", nil)
		ids, _ := h.WaitingOptOuts("acme", n)
		a := h.replica(recontest.ReplicaOpts{Name: "replica-a"})

		rep := h.runNow(a, "acme", false)
		if rep.Status != runs.StatusSucceeded || rep.Writes.EventsFolded != n || rep.Writes.EventsWaiting != 0 {
			t.Fatalf("report %s (%s), writes %+v; want succeeded with %d events folded", rep.Status, rep.Reason, rep.Writes, n)
		}
		if rep.Writes.SalesforceWritten != n {
			t.Errorf("%d records written to Salesforce; want %d", rep.Writes.SalesforceWritten, n)
		}
		for sc, id := range ids {
			r, ok := h.Org("acme").Get(id)
			if !ok || !r.HasOptedOutOfEmail {
				t.Errorf("Salesforce %s (%s): HasOptedOutOfEmail=%v; want true", sc, id, r.HasOptedOutOfEmail)
			}
			e, _ := h.Entry(optout.Key("acme", sc, ""))
			if !e.OptedOut || e.State != optout.StateSynced || e.Confirmed == nil || !*e.Confirmed || e.SalesforceID != id {
				t.Errorf("ledger %s: optedOut=%v state=%s confirmed=%v sf=%s; want an opted-out SYNCED entry",
					sc, e.OptedOut, e.State, e.Confirmed, e.SalesforceID)
			}
		}
	})

	t.Run("dry run only counts them", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, "acme")
		h.SetSettings("acme", nil)
		ids, oldest := h.WaitingOptOuts("acme", n)
		a := h.replica(recontest.ReplicaOpts{Name: "replica-a"})

		rep := h.runNow(a, "acme", true)
		wantSince := oldest.UTC().Format(time.RFC3339)
		if rep.Status != runs.StatusIncomplete || rep.Writes.EventsWaiting != n || rep.Writes.EventsFolded != 0 {
			t.Fatalf("report %s (%s), writes %+v; want incomplete with %d events waiting", rep.Status, rep.Reason, rep.Writes, n)
		}
		if !strings.Contains(rep.Reason, strconv.Itoa(n)+" ") || !strings.Contains(rep.Reason, wantSince) {
			t.Errorf("reason %q; want it to name %d waiting events and the oldest's time %s", rep.Reason, n, wantSince)
		}
		if got := h.LedgerRevisions("acme"); len(got) != 0 {
			t.Errorf("a dry run folded %d ledger entries", len(got))
		}
		if w := h.SFWrites("acme", ""); w != 0 {
			t.Errorf("a dry run made %d Salesforce writes", w)
		}
		for _, id := range ids {
			if r, _ := h.Org("acme").Get(id); r.HasOptedOutOfEmail {
				t.Fatalf("a dry run changed %s", id)
			}
		}
		// The events are still there: the next real run folds them all.
		if rep := h.runNow(a, "acme", false); rep.Status != runs.StatusSucceeded || rep.Writes.EventsFolded != n {
			t.Fatalf("the real run after the dry run: %s (%s), writes %+v", rep.Status, rep.Reason, rep.Writes)
		}
	})

	// The pusher's one consumer serves every tenant; it stopped holding
	// events of both tenants unacked. The run folds all of acme's from the
	// stream (none is out of its reach), leaves globex's and the pusher's
	// consumer alone, and succeeds.
	t.Run("events a stopped pusher holds unacked", func(t *testing.T) {
		t.Parallel()
		const held, others = 30, 20
		h := newHarness(t, "acme", "globex")
		h.SetSettings("acme", nil)
		h.WaitingOptOuts("globex", others)
		ids, _ := h.WaitingOptOuts("acme", n)
		cons, err := eventstream.EnsurePusherConsumer(h.Ctx, h.Prov.JS, h.Topo)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(held, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for range batch.Messages() {
			got++
		}
		if got != held {
			t.Fatalf("the stand-in pusher fetched %d events; want %d", got, held)
		}
		pusherInfo := func() *jetstream.ConsumerInfo {
			info, err := cons.Info(h.Ctx)
			if err != nil {
				t.Fatal(err)
			}
			return info
		}
		before := pusherInfo()
		a := h.replica(recontest.ReplicaOpts{Name: "replica-a"})

		rep := h.runNow(a, "acme", false)
		if rep.Status != runs.StatusSucceeded || rep.Writes.EventsFolded != n || rep.Writes.EventsWaiting != 0 {
			t.Fatalf("report %s (%s), writes %+v; want succeeded with all %d events folded", rep.Status, rep.Reason, rep.Writes, n)
		}
		if rep.Writes.SalesforceWritten != n {
			t.Errorf("%d records written; want %d", rep.Writes.SalesforceWritten, n)
		}
		for sc, id := range ids {
			if r, ok := h.Org("acme").Get(id); !ok || !r.HasOptedOutOfEmail {
				t.Errorf("Salesforce %s (%s): HasOptedOutOfEmail=%v; want true", sc, id, r.HasOptedOutOfEmail)
			}
		}
		if revs := h.LedgerRevisions("globex"); len(revs) != 0 {
			t.Errorf("acme's run folded %d ledger entries of globex", len(revs))
		}
		if w := h.SFWrites("globex", ""); w != 0 {
			t.Errorf("acme's run wrote %d globex records", w)
		}
		after := pusherInfo()
		if after.AckFloor != before.AckFloor || after.NumAckPending != held || after.NumPending != before.NumPending {
			t.Errorf("the run moved the pusher's consumer: ack floor %+v -> %+v, %d unacked (want %d), %d pending (was %d)",
				before.AckFloor, after.AckFloor, after.NumAckPending, held, after.NumPending, before.NumPending)
		}
	})
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

// A run whose Salesforce write of the sales field lands but never gets an
// answer (the connection dropped every time, as when a replica dies
// mid-call) leaves the ledger saying the mark may be ours, so the person's
// later resubscribe still clears it instead of taking it for someone
// else's.
func TestARunWhoseWriteLandsUnansweredLeavesTheMarkOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	st := h.SetSettings("acme", func(st *tenant.Settings) { st.Field = tenant.SalesOptOut })
	field := st.TargetField()
	id := h.Org("acme").Put(sandbox.Record{Type: "Contact", Email: "p@example.com", SystemModstamp: time.Now().Add(-48 * time.Hour)}).ID
	key := optout.Key("acme", "sc-p", "")
	t0 := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Millisecond)
	h.PutEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-p", SalesforceID: id, ObjectType: "Contact",
		OptedOut: true, DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-p", Source: "EMAIL_LINK", State: optout.StatePending})
	h.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, DropAfterWrite: true})

	rep := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-a"}), "acme", false)
	if rep.Status == runs.StatusSucceeded {
		t.Fatalf("run %s although no write was ever answered", rep.Status)
	}
	if r, _ := h.Org("acme").Get(id); !r.CustomOptOut {
		t.Fatal("the dropped write did not land: the test needs it to")
	}
	if _, err := h.Ledger.Writer("acme", field).Ingest(h.Ctx, optout.EventInput{ID: "evt-r", Action: optout.Resubscribe,
		OccurredAt: time.Now().Add(-time.Hour), SalesConnectID: "sc-p", SalesforceID: id, ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}
	e, _ := h.Entry(key)
	if v, w := e.Target(field); v || !w {
		t.Fatalf("after the resubscribe Target(%s) = (%t, %t); want a write of false due: the true may be ours (entry field %q setByUs %t confirmed %v)",
			field, v, w, e.Field, e.SetByUs, e.Confirmed)
	}
}
