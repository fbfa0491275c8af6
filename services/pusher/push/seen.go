package push

import (
	"sync"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// seen holds, for one tenant's queued persons, the entry this replica last
// wrote for each (with its revision and dirty marker's), so the batch that
// takes the person starts from it instead of reading the ledger again: in a
// burst, that read was a third of the push's ledger round trips. It is a
// hint, never the truth: every write that starts from it compares-and-sets
// on its revision, so one that has moved (another replica, the reconciler)
// costs a read, and the write goes by the entry as stored. A batch takes
// each of its persons' hints, used or not, so none outlives its round.
//
// An Email Opt Out write is made before any compare-and-set (it needs no
// claim), so a hint is used only while fresh: a person held back (an
// unhealthy tenant, a retry's wait) is read again, as the entry may have
// changed meanwhile in ways that make the write wrong (a newer clear
// learnt from Salesforce).
type seen struct {
	mu sync.Mutex
	m  map[string]hint
	// limit bounds the hints held; past it a person is read as before.
	limit int
	// fresh is how long a hint may be used (hintFresh).
	fresh time.Duration
}

type hint struct {
	ledger.Snapshot
	at time.Time // when it was remembered (monotonic)
}

// seenLimit is the most hints a tenant holds: a few full batches. A
// backlog longer than that is read from the ledger as it is taken.
const seenLimit = 2000

// hintFresh is how long a hint may be used: far longer than a healthy
// tenant's queue wait, far shorter than a retry's or a hold's.
const hintFresh = 5 * time.Second

func newSeen() *seen { return &seen{m: map[string]hint{}, limit: seenLimit, fresh: hintFresh} }

// remember keeps s as key's hint unless a newer one is held.
func (c *seen) remember(key string, s ledger.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.m[key]
	switch {
	case ok && cur.Rev >= s.Rev:
	case ok || len(c.m) < c.limit:
		c.m[key] = hint{Snapshot: s, at: time.Now()}
	}
}

// take removes key's hint and returns it if it is fresh.
func (c *seen) take(key string) (ledger.Snapshot, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[key]
	delete(c.m, key)
	if !ok || time.Since(h.at) > c.fresh {
		return ledger.Snapshot{}, false
	}
	return h.Snapshot, true
}

// forget drops key's hint: this replica wrote the entry without learning
// its new revision.
func (c *seen) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}
