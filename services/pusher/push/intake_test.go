package push

import (
	"context"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/pusher/queue"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// The shared consumer's pending count is every tenant's, so whether a
// tenant's batch lingers is decided by what the replica sees of that
// tenant: its events being folded, or a burst (events under burstGap
// apart) whose next event may still be in the pull buffer, for burstFresh
// after the last one. A lone event, or a trickle, never lingers once
// folded.
func TestMoreComingFollowsTheTenantsOwnEvents(t *testing.T) {
	t.Parallel()
	r := &arrivals{}
	if r.moreComing() {
		t.Fatal("a tenant nothing was delivered for has more coming")
	}

	// A lone event: more coming while it is folded, not after.
	r.delivered()
	if !r.moreComing() {
		t.Error("an event being folded does not count as coming")
	}
	r.folded()
	if r.moreComing() {
		t.Error("a lone event, folded, still says more are coming: it would linger")
	}

	// A trickle: events 100 ms apart never linger once folded.
	time.Sleep(100 * time.Millisecond)
	r.delivered()
	r.folded()
	if r.moreComing() {
		t.Error("a trickle (100 ms apart) says more are coming")
	}

	// A burst: two events within burstGap, both folded: more are likely in
	// the pull buffer, for burstFresh after the last.
	r.delivered()
	r.delivered()
	r.folded()
	r.folded()
	if !r.moreComing() {
		t.Error("a burst's events, folded faster than they arrive, do not say more are coming")
	}
	time.Sleep(burstFresh + 10*time.Millisecond)
	if r.moreComing() {
		t.Errorf("a burst still says more are coming %s after its last event", burstFresh+10*time.Millisecond)
	}
}

func newLane() *runner {
	return &runner{tenant: "acme", q: queue.New[ledger.Snapshot](queue.Config{HintLimit: 10, HintFresh: time.Minute, HoldLimit: 10, Hold: time.Minute})}
}

// A fold that held its event hands the person to the queue with the
// event's ack: the batch that takes it is told Held and gets the fold's
// entry as its hint, and the event is acked once that batch leaves the
// person clean at or past the fold's revision, not before.
func TestAHeldFoldHandsItsAckToThePersonsWork(t *testing.T) {
	t.Parallel()
	r := newLane()
	r.arrivals.delivered()
	acked := 0
	handOff(r, "acme.p", ledger.Snapshot{Rev: 4, Held: true}, func() { acked++ })
	if r.arrivals.moreComing() {
		t.Error("the fold is over, yet its tenant still counts it as coming")
	}
	w := r.q.Take(10, 0, nil)
	if len(w) != 1 || w[0].Key != "acme.p" || !w[0].Held || !w[0].Hinted || w[0].Hint.Rev != 4 || w[0].Hint.Held {
		t.Fatalf("Take = %+v; want acme.p held, hinted at rev 4 (the hint itself not marked held)", w)
	}
	if acked != 0 {
		t.Fatal("the held event was acked before its push")
	}
	r.q.Done("acme.p", 3) // left clean before the fold's revision
	if acked != 0 {
		t.Fatal("the event was acked by a write that did not cover its fold")
	}
	r.q.Add("acme.p")
	r.q.Take(10, 0, nil)
	r.q.Done("acme.p", 4)
	if acked != 1 {
		t.Fatalf("acked %d times; want once, by the write that left the person clean at its revision", acked)
	}
}

// A fold the ledger settled (acked with its marker) hands the person over
// without an ack; a fold that left nobody dirty hands nothing.
func TestASettledFoldHandsNoAck(t *testing.T) {
	t.Parallel()
	r := newLane()
	r.arrivals.delivered()
	r.arrivals.delivered()
	acked := 0
	handOff(r, "acme.p", ledger.Snapshot{Rev: 2}, func() { acked++ })
	handOff(r, "", ledger.Snapshot{}, func() { acked++ })
	w := r.q.Take(10, 0, nil)
	if len(w) != 1 || w[0].Held {
		t.Fatalf("Take = %+v; want acme.p alone, not held", w)
	}
	r.q.Done("acme.p", 2)
	r.q.Due(context.Background(), true, func(context.Context, string) error { return nil })
	if acked != 0 {
		t.Fatalf("an event the fold settled was acked %d more times", acked)
	}
}
