package engine_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
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
