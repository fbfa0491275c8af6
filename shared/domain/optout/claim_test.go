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
	if e.HeldAgainst(y, now.Add(time.Minute)) == nil || e.HeldAgainst(x, now.Add(time.Minute)) != nil {
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

func TestClaimEndsWhenItsWriterDies(t *testing.T) {
	t.Parallel()
	now := at(100)
	x := optout.NewClaim(now, optout.DefaultClaimTTL)
	e, _, _ := optout.Attempt(optedOut(salesF), claimed(true, x, now), salesF)
	// X dies mid-call and never reports. Until its claim ends nobody
	// writes; X's own call was given up ClaimSkew before that.
	if !x.Until.Equal(now.Add(optout.DefaultClaimTTL)) || !x.Deadline.Equal(x.Until.Add(-15*time.Second)) {
		t.Fatalf("claim %+v: want it to hold DefaultClaimTTL and its call to end 15 s (the clock skew it allows) earlier", x)
	}
	y := optout.NewClaim(x.Until.Add(-time.Millisecond), optout.DefaultClaimTTL)
	if _, _, held := optout.Attempt(e, claimed(true, y, x.Until.Add(-time.Millisecond)), salesF); held == nil {
		t.Fatalf("a claim was taken over before it ended")
	}
	e, changed, held := optout.Attempt(e, claimed(true, y, x.Until), salesF)
	if !changed || held != nil || e.Writing.ID != y.ID {
		t.Fatalf("at the claim's end: changed %t, held %v; want Y's claim", changed, held)
	}
	// X's report, arriving late after all, leaves Y's claim alone.
	e, _ = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: salesF, Value: true, At: x.Until, OK: true, Claim: x}, salesF)
	if e.Writing == nil || e.Writing.ID != y.ID {
		t.Fatalf("a late report of an ended claim released the next one: %+v", e.Writing)
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
