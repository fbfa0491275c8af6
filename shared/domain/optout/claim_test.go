package optout_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// claimed is a sales-field write of value by the holder of c, at now.
func claimed(value bool, c *optout.Claim, now time.Time) optout.Write {
	return optout.Write{SalesforceID: sfC, Field: salesF, Value: value, At: now, Claim: c}
}

func TestClaimHoldsOffOtherWriters(t *testing.T) {
	t.Parallel()
	now := at(100)
	x, y := optout.NewClaim(now, optout.DefaultClaimTTL), optout.NewClaim(now.Add(time.Second), optout.DefaultClaimTTL)
	if x.ID == y.ID {
		t.Fatalf("two claims share the id %s", x.ID)
	}

	// X takes the claim with its attempt to write the opt-out.
	e, changed, held := optout.Attempt(optedOut(salesF), claimed(true, x, now), salesF)
	if !changed || held != nil || e.Writing == nil || e.Writing.ID != x.ID {
		t.Fatalf("X's attempt: changed %t, held %v, writing %+v; want X's claim recorded", changed, held, e.Writing)
	}
	if !strings.HasPrefix(e.Reason, "writing "+salesF+"=true to Salesforce") {
		t.Errorf("Reason %q: want the trail to say the write is under way", e.Reason)
	}
	// The person resubscribes meanwhile: the fold keeps X's claim.
	e, _ = optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), salesF)
	if e.Writing == nil || e.Writing.ID != x.ID {
		t.Fatalf("a fold dropped the claim: %+v", e.Writing)
	}
	// Y, about to write the resubscribe, is held off while X's write may land.
	before := e
	e2, changed, held := optout.Attempt(e, claimed(false, y, now.Add(time.Minute)), salesF)
	if changed || held == nil || held.ID != x.ID || e2.Writing.ID != x.ID || e2.Version != before.Version {
		t.Fatalf("Y's attempt under X's claim: changed %t, held %v; want nothing recorded and X's claim returned", changed, held)
	}
	if e.HeldAgainst(y, false, now.Add(time.Minute)) == nil || e.HeldAgainst(x, true, now.Add(time.Minute)) != nil {
		t.Fatalf("HeldAgainst: the claim must hold Y off and not X")
	}

	// X's report on the stale revision releases the claim and leaves the
	// person dirty: the next round writes the resubscribe.
	e, changed = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: salesF, Value: true, At: now.Add(2 * time.Second), OK: true, Claim: x}, salesF)
	if !changed || e.Writing != nil {
		t.Fatalf("X's report: changed %t, writing %+v; want the claim released", changed, e.Writing)
	}
	if v, w := e.Target(salesF); v || !w {
		t.Fatalf("after X's stale report Target = (%t, %t); want false to be written", v, w)
	}
	e, changed, held = optout.Attempt(e, claimed(false, y, now.Add(3*time.Second)), salesF)
	if !changed || held != nil || e.Writing.ID != y.ID {
		t.Fatalf("Y after the release: changed %t, held %v; want Y's claim", changed, held)
	}
}

// TestClaimEndsWhenItsWriterDies: X dies mid-call and never reports. A
// writer of the same value takes the person over after
// DefaultClaimTakeover (the order of two equal writes does not matter); a
// writer of the other value waits until X's call cannot land any more, even
// after the one that took over has released the person.
func TestClaimEndsWhenItsWriterDies(t *testing.T) {
	t.Parallel()
	now := at(100)
	x := optout.NewClaim(now, optout.DefaultClaimTTL)
	e, _, _ := optout.Attempt(optedOut(salesF), claimed(true, x, now), salesF)
	if !x.Until.Equal(now.Add(optout.DefaultClaimTTL)) || !x.Deadline.Equal(x.Until.Add(-15*time.Second)) || !x.Takeover.Equal(now.Add(optout.DefaultClaimTakeover)) {
		t.Fatalf("claim %+v: want it to hold DefaultClaimTTL, its call to end 15 s (the clock skew it allows) earlier, and writers of its value after DefaultClaimTakeover", x)
	}
	if e.Writing.Value != true {
		t.Fatalf("the entry's claim does not say which value is being written: %+v", e.Writing)
	}
	early := now.Add(optout.DefaultClaimTakeover - time.Millisecond)
	y := optout.NewClaim(early, optout.DefaultClaimTTL)
	if _, _, held := optout.Attempt(e, claimed(true, y, early), salesF); held == nil || !held.Until.Equal(x.Takeover) {
		t.Fatalf("a writer of the same value took over before Takeover (held %+v)", held)
	}
	takeover := now.Add(optout.DefaultClaimTakeover)
	y = optout.NewClaim(takeover, optout.DefaultClaimTTL)
	e, changed, held := optout.Attempt(e, claimed(true, y, takeover), salesF)
	if !changed || held != nil || e.Writing.ID != y.ID || !e.Writing.Prior.Equal(x.Until) {
		t.Fatalf("same value at Takeover: changed %t, held %v, writing %+v; want Y's claim carrying X's horizon", changed, held, e.Writing)
	}
	// X's report, arriving late after all, leaves Y's claim alone.
	e, _ = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: salesF, Value: true, At: takeover, OK: true, Claim: x}, salesF)
	if e.Writing == nil || e.Writing.ID != y.ID {
		t.Fatalf("a late report of a taken-over claim released the next one: %+v", e.Writing)
	}
	// Y confirms quickly; the person resubscribes. X's call may still land
	// a true until X.Until, so the false waits until then.
	e, _ = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: salesF, Value: true, At: takeover.Add(time.Second), OK: true, Current: true, Claim: y}, salesF)
	if e.Writing == nil || e.Writing.ID != "" || !e.Writing.Until.Equal(x.Until) {
		t.Fatalf("after Y's release: writing %+v; want a residual claim until X's horizon", e.Writing)
	}
	e, _ = optout.Fold(e, true, in("r1", optout.Resubscribe, 2000, sfC), salesF)
	resub := takeover.Add(2 * time.Second)
	z := optout.NewClaim(resub, optout.DefaultClaimTTL)
	if _, _, held := optout.Attempt(e, claimed(false, z, resub), salesF); held == nil || !held.Until.Equal(x.Until) {
		t.Fatalf("the other value was let through while X's call may land (held %+v)", held)
	}
	if _, _, held := optout.Attempt(e, claimed(true, z, resub), salesF); held != nil {
		t.Fatalf("the residual claim held a writer of the same value: %+v", held)
	}
	e, changed, held = optout.Attempt(e, claimed(false, z, x.Until), salesF)
	if !changed || held != nil || e.Writing.ID != z.ID || !e.Writing.Prior.IsZero() {
		t.Fatalf("the other value at X's horizon: changed %t, held %v, writing %+v; want Z's own claim", changed, held, e.Writing)
	}
}

// TestClaimWrittenBeforeTakeoverExistedHoldsEveryone: a claim stored by the
// previous release (no value, no Takeover) holds every writer to its Until.
func TestClaimWrittenBeforeTakeoverExistedHoldsEveryone(t *testing.T) {
	t.Parallel()
	now := at(100)
	e := optedOut(salesF)
	e.Writing = &optout.Claim{ID: "old", Until: now.Add(time.Minute), Deadline: now.Add(45 * time.Second)}
	for _, v := range []bool{true, false} {
		if h := e.HeldAgainst(nil, v, now.Add(30*time.Second)); h == nil || !h.Until.Equal(now.Add(time.Minute)) {
			t.Errorf("value %t: held %+v; want held to the old claim's Until", v, h)
		}
	}
}

func TestClaimReleasedByEveryReport(t *testing.T) {
	t.Parallel()
	now := at(100)
	for name, report := range map[string]func(optout.Entry, *optout.Claim) optout.Entry{
		"failed, retryable": func(e optout.Entry, c *optout.Claim) optout.Entry {
			e, _ = optout.Failed(e, optout.Failure{Write: claimed(true, c, now), Err: "UNABLE_TO_LOCK_ROW", Wait: time.Second, Now: now, Horizon: time.Hour}, salesF)
			return e
		},
		"failed, permanent": func(e optout.Entry, c *optout.Claim) optout.Entry {
			e, _ = optout.Failed(e, optout.Failure{Write: claimed(true, c, now), Permanent: true, Err: "INVALID_FIELD", Now: now, Horizon: time.Hour}, salesF)
			return e
		},
		"confirmed": func(e optout.Entry, c *optout.Claim) optout.Entry {
			e, _ = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: salesF, Value: true, At: now, OK: true, Current: true, Claim: c}, salesF)
			return e
		},
		"the Lead was converted": func(e optout.Entry, c *optout.Claim) optout.Entry {
			e, _ = optout.ConversionFollowed(e, sfC, sfC2, salesF)
			return e
		},
	} {
		c := optout.NewClaim(now, optout.DefaultClaimTTL)
		e, _, _ := optout.Attempt(optedOut(salesF), claimed(true, c, now), salesF)
		if e = report(e, c); e.Writing != nil {
			t.Errorf("%s: the claim outlived its write: %+v", name, e.Writing)
		}
	}
}
