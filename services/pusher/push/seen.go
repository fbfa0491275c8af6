package push

import (
	"sync"

	"github.com/optout-sync/optout-sync/shared/ledger"
)

// seen holds, for one tenant's queued persons, the entry this replica last
// wrote for each (with its revision and dirty marker's), so the batch that
// takes the person starts from it instead of reading the ledger again: in a
// burst, that read was a third of the push's ledger round trips. It is a
// hint, never the truth: every write that starts from it compares-and-sets
// on its revision, so one that has moved (another replica, the reconciler)
// costs a read, and the write goes by the entry as stored. A batch takes
// each of its persons' hints, used or not, so none outlives its round.
type seen struct {
	mu sync.Mutex
	m  map[string]ledger.Snapshot
	// limit bounds the hints held; past it a person is read as before.
	limit int
}

// seenLimit is the most hints a tenant holds: a few full batches. A
// backlog longer than that is read from the ledger as it is taken.
const seenLimit = 2000

func newSeen() *seen { return &seen{m: map[string]ledger.Snapshot{}, limit: seenLimit} }

// remember keeps s as key's hint unless a newer one is held.
func (c *seen) remember(key string, s ledger.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.m[key]
	switch {
	case ok && cur.Rev >= s.Rev:
	case ok || len(c.m) < c.limit:
		c.m[key] = s
	}
}

// take removes and returns key's hint.
func (c *seen) take(key string) (ledger.Snapshot, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[key]
	delete(c.m, key)
	return s, ok
}

// forget drops key's hint: this replica wrote the entry without learning
// its new revision.
func (c *seen) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}
