package push

import (
	"testing"
	"time"
)

// The shared consumer's pending count is every tenant's, so whether a
// tenant's batch lingers is decided by what the replica sees of that
// tenant: its events being folded, or a burst (events under burstGap
// apart) whose next event may still be in the pull buffer, for burstFresh
// after the last one. A lone event, or a trickle, never lingers once
// folded.
func TestMoreComingFollowsTheTenantsOwnEvents(t *testing.T) {
	t.Parallel()
	r := &runner{}
	if r.moreComing() {
		t.Fatal("a tenant nothing was delivered for has more coming")
	}

	// A lone event: more coming while it is folded, not after.
	r.delivered()
	if !r.moreComing() {
		t.Error("an event being folded does not count as coming")
	}
	r.folding.Add(-1)
	if r.moreComing() {
		t.Error("a lone event, folded, still says more are coming: it would linger")
	}

	// A trickle: events 100 ms apart never linger once folded.
	time.Sleep(100 * time.Millisecond)
	r.delivered()
	r.folding.Add(-1)
	if r.moreComing() {
		t.Error("a trickle (100 ms apart) says more are coming")
	}

	// A burst: two events within burstGap, both folded: more are likely in
	// the pull buffer, for burstFresh after the last.
	r.delivered()
	r.delivered()
	r.folding.Add(-2)
	if !r.moreComing() {
		t.Error("a burst's events, folded faster than they arrive, do not say more are coming")
	}
	time.Sleep(burstFresh + 10*time.Millisecond)
	if r.moreComing() {
		t.Errorf("a burst still says more are coming %s after its last event", burstFresh+10*time.Millisecond)
	}
}
