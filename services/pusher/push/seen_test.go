package push

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// A hint is the newest entry remembered, used once, and only while fresh;
// past the limit persons are read instead.
func TestSeenKeepsTheNewestFreshHint(t *testing.T) {
	c := newSeen()
	c.remember("p", ledger.Snapshot{Rev: 7, Mark: 3})
	c.remember("p", ledger.Snapshot{Rev: 5, Mark: 2}) // an older fold, reported late
	if s, ok := c.take("p"); !ok || s.Rev != 7 || s.Mark != 3 {
		t.Fatalf("take = %+v, %v; want the newer hint (rev 7, mark 3)", s, ok)
	}
	if _, ok := c.take("p"); ok {
		t.Fatal("a hint was used twice; want it gone once taken")
	}

	c.fresh = 20 * time.Millisecond
	c.remember("q", ledger.Snapshot{Rev: 1})
	time.Sleep(40 * time.Millisecond)
	if _, ok := c.take("q"); ok {
		t.Fatal("a stale hint was used; want the person read from the ledger")
	}

	c.limit = 2
	c.remember("a", ledger.Snapshot{Rev: 1})
	c.remember("b", ledger.Snapshot{Rev: 1})
	c.remember("c", ledger.Snapshot{Rev: 1})
	c.remember("a", ledger.Snapshot{Rev: 2}) // a held hint is still replaced
	if _, ok := c.take("c"); ok {
		t.Fatal("a hint past the limit was kept")
	}
	if s, ok := c.take("a"); !ok || s.Rev != 2 {
		t.Fatalf("take a = %+v, %v; want rev 2", s, ok)
	}
}
