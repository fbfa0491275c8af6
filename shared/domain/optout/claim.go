package optout

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Claim is one writer's hold on a person while its write of the sales
// field is in flight. Two writers that each read the person at a different
// revision would otherwise both write, and the older value could land last:
// a resubscribe confirmed false, then an opt-out's delayed true over it,
// until the next round cleared it again. The claim is taken with the
// write's Attempt, by compare-and-set on the revision the writer read, so
// one writer at a time holds it; the write's report releases it.
//
// A writer that dies mid-call never reports: its claim ends at Until, and
// its call must not outlive it. A writer gives its own call up at
// Deadline, an eighth of the claim's time before Until (15 s at the
// default), so another writer whose clock runs up to that much ahead never
// writes while the call may still land.
//
// Only a write of the other value must wait that long: the order of two
// writes of the same value does not matter. So a writer of the same Value
// may take the person over from Takeover on (DefaultClaimTakeover after the
// claim was taken), and a replica killed mid-write holds its opt-outs for
// seconds, not minutes. The taken-over claim's call may still land until
// its Until, so the new claim carries that horizon as Prior, and releasing
// it leaves a residual claim (no ID) that holds writers of the other value
// until Prior: an older value still never lands after a newer one.
type Claim struct {
	ID       string    `json:"id,omitempty"`
	Until    time.Time `json:"until"`
	Deadline time.Time `json:"deadline,omitzero"`
	// Value is the value the claim's writer writes (recorded with the
	// person's claim by Attempt).
	Value bool `json:"value,omitempty"`
	// Takeover: from then on a writer of the same Value may take the person.
	// Zero on claims written before it existed: they hold everyone to Until.
	Takeover time.Time `json:"takeover,omitzero"`
	// Prior is the latest Until of the claims this one took over.
	Prior time.Time `json:"prior,omitzero"`
}

// DefaultClaimTakeover is how long a claim holds writers of its own value
// (a quarter of a shorter claim's time):
// far longer than a live writer's Attempt-to-call gap, short enough that a
// dead writer's opt-outs are written again within seconds.
const DefaultClaimTakeover = 10 * time.Second

// DefaultClaimTTL is how long a claim holds by default: as long as one
// Salesforce HTTP exchange may take (salesforce.DefaultTimeout), so a live
// writer's call ends inside it. A person whose writer died waits this long.
const DefaultClaimTTL = 2 * time.Minute

// NewClaim is a fresh claim taken at now for ttl (DefaultClaimTTL when
// not positive).
func NewClaim(now time.Time, ttl time.Duration) *Claim {
	if ttl <= 0 {
		ttl = DefaultClaimTTL
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	now = now.UTC()
	return &Claim{ID: hex.EncodeToString(b[:]), Until: now.Add(ttl), Deadline: now.Add(ttl - ttl/8),
		Takeover: now.Add(min(DefaultClaimTakeover, ttl/4))}
}

// HeldAgainst returns the entry's claim, with Until set to when it stops
// holding, when it keeps the holder of mine (nil: no claim yet), writing
// value, from writing the person at now.
func (e *Entry) HeldAgainst(mine *Claim, value bool, now time.Time) *Claim {
	c := e.Writing
	if c == nil || (mine != nil && c.ID != "" && c.ID == mine.ID) {
		return nil
	}
	end := c.Until
	if c.Value == value && (c.ID == "" || (!c.Takeover.IsZero() && c.Takeover.Before(end))) {
		end = c.Takeover // a residual claim (no ID) holds only the other value
	}
	if !now.Before(end) {
		return nil
	}
	held := *c
	held.Until = end
	return &held
}

// takeOver is claim c (writing value) as the entry records it, taking the
// person over from the entry's claim at now: it inherits the horizon of the
// claims it replaces while their calls may still land.
func (e *Entry) takeOver(c Claim, value bool, now time.Time) Claim {
	c.Value, c.Prior = value, time.Time{}
	if old := e.Writing; old != nil && old.ID != c.ID {
		for _, t := range []time.Time{old.Until, old.Prior} {
			if t.After(now) && t.After(c.Prior) {
				c.Prior = t
			}
		}
	}
	return c
}

// Release ends claim c when it is the entry's: its write is over (reported,
// or gone to another record). A claim that took others over leaves a
// residual one while their calls may still land (Claim.Prior).
func Release(e Entry, c *Claim) (Entry, bool) {
	if c == nil || e.Writing == nil || e.Writing.ID != c.ID {
		return e, false
	}
	if w := e.Writing; !w.Prior.IsZero() {
		e.Writing = &Claim{Until: w.Prior, Value: w.Value}
		return e, true
	}
	e.Writing = nil
	return e, true
}

// CallDeadline is the claim's Deadline on the process's own clock, for a
// claim taken at takenAt by a clock that may be another (a test's): the
// holder's context ends then.
func (c *Claim) CallDeadline(takenAt time.Time) time.Time {
	return time.Now().Add(c.Deadline.Sub(takenAt))
}
