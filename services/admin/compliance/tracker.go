// Package compliance keeps the admin service's compliance clock: per
// tenant, the opt-outs not yet honoured in Salesforce (compliance.Unhonoured)
// and the oldest of them against 48 hours and 10 business days, shown on
// the tenant's page (Panel) and exported as metrics (Tracker.Register).
//
// Why a ledger follower and not the dirty set or a scan: the follower
// (ledger.Follower, shared with the suppression index through
// services/admin/ledgerfeed) reads every entry once at start and then each change as
// it is stored, so a scrape costs a walk over the unhonoured opt-outs held
// in memory (a handful normally, the backlog after an outage) and no NATS
// request; the dirty set would need a KV watch per scrape and a read of each
// entry for when its opt-out was asked for, and a scan reads every person.
// Memory is one small record per unhonoured opt-out, not per person.
//
// While a person stays unhonoured, a newer opt-out of theirs (a second
// click) does not restart their clock: the earliest ask of the unbroken
// wait counts. After a restart the follower sees only each entry's current
// value, so such a person's clock starts again from their latest ask.
package compliance

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/domain/compliance"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Tracker holds every tenant's unhonoured opt-outs, fed by the admin
// service's ledger feed (Apply, MarkCurrent).
type Tracker struct {
	mu sync.Mutex
	// tenants: every tenant the ledger holds an entry of, each with its
	// unhonoured opt-outs (ledger key less the tenant, to when the person
	// asked, Unix nanoseconds).
	tenants map[string]map[string]int64
	// loaded is set once the follower has read the whole ledger: until
	// then the clock is unknown, not 0, and no metric is reported (a
	// restarted replica must not claim that nothing waits).
	loaded atomic.Bool
	log    zerolog.Logger
	// Now is the clock (tests set it).
	Now func() time.Time
}

// NewTracker returns an empty tracker; the ledger feed fills it.
func NewTracker(log zerolog.Logger) *Tracker {
	return &Tracker{tenants: map[string]map[string]int64{}, log: log}
}

func (t *Tracker) now() time.Time {
	if t.Now != nil {
		return t.Now().UTC()
	}
	return time.Now().UTC()
}

// Apply folds one ledger change into the tracker.
func (t *Tracker) Apply(c ledger.Change) {
	tenant, rest, ok := strings.Cut(c.Key, ".")
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	owed := t.tenants[tenant]
	if owed == nil {
		owed = map[string]int64{}
		t.tenants[tenant] = owed
	}
	since, ok := compliance.Unhonoured(c.Entry)
	if c.Deleted || !ok {
		delete(owed, rest)
		return
	}
	n := since.UnixNano()
	if prev, held := owed[rest]; held && prev < n {
		n = prev // still waiting since the earlier ask
	}
	owed[rest] = n
}

// Loaded reports whether the tracker has read the whole ledger once.
func (t *Tracker) Loaded() bool { return t.loaded.Load() }

// Clock is tenant's compliance clock now; ok is false until the tracker has
// read the whole ledger.
func (t *Tracker) Clock(tenant string) (c compliance.Clock, ok bool) {
	now := t.now()
	if !t.Loaded() {
		return compliance.Clock{At: now}, false
	}
	t.mu.Lock()
	n, oldest, key := oldestOf(t.tenants[tenant])
	t.mu.Unlock()
	if n > 0 {
		key = tenant + "." + key
	}
	return compliance.NewClock(now, n, oldest, key), true
}

// Clocks is every known tenant's clock now (nil until loaded).
func (t *Tracker) Clocks() map[string]compliance.Clock {
	if !t.Loaded() {
		return nil
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]compliance.Clock, len(t.tenants))
	for tenant, owed := range t.tenants {
		n, oldest, key := oldestOf(owed)
		if n > 0 {
			key = tenant + "." + key
		}
		out[tenant] = compliance.NewClock(now, n, oldest, key)
	}
	return out
}

func oldestOf(owed map[string]int64) (n int, oldest time.Time, key string) {
	var min int64
	for k, v := range owed {
		if n == 0 || v < min || (v == min && k < key) {
			min, key = v, k
		}
		n++
	}
	if n == 0 {
		return 0, time.Time{}, ""
	}
	return n, time.Unix(0, min).UTC(), key
}

// MarkCurrent is told by the ledger feed (services/admin/ledgerfeed) that
// every change stored before at is applied: from the first call on, the
// tracker has read the whole ledger and its clocks are known.
func (t *Tracker) MarkCurrent(time.Time) {
	if !t.loaded.Swap(true) {
		t.log.Info().Msg("compliance clock: read the whole ledger")
	}
}
