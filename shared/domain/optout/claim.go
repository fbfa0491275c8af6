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
type Claim struct {
	ID       string    `json:"id"`
	Until    time.Time `json:"until"`
	Deadline time.Time `json:"deadline"`
}

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
	return &Claim{ID: hex.EncodeToString(b[:]), Until: now.Add(ttl), Deadline: now.Add(ttl - ttl/8)}
}

// HeldAgainst returns the entry's claim when it keeps the holder of mine
// (nil: no claim yet) from writing the person at now.
func (e *Entry) HeldAgainst(mine *Claim, now time.Time) *Claim {
	c := e.Writing
	if c == nil || (mine != nil && c.ID == mine.ID) || !now.Before(c.Until) {
		return nil
	}
	return c
}

// Release ends claim c when it is the entry's: its write is over (reported,
// or gone to another record).
func Release(e Entry, c *Claim) (Entry, bool) {
	if c == nil || e.Writing == nil || e.Writing.ID != c.ID {
		return e, false
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
