package compliance

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// TestASecondClickDoesNotRestartTheClock: while a person stays unhonoured,
// their earliest ask counts; confirmed, deleted or resubscribed, they leave
// the clock.
func TestASecondClickDoesNotRestartTheClock(t *testing.T) {
	first := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	tr := NewTracker(zerolog.Nop())
	tr.Now = func() time.Time { return first.Add(50 * time.Hour) }
	tr.loaded.Store(true)
	pending := func(at time.Time) optout.Entry {
		return optout.Entry{Tenant: "t", OptedOut: true, State: optout.StatePending, DecidedAt: at}
	}
	tr.Apply(ledger.Change{Key: "t.sf.A", Entry: pending(first)})
	tr.Apply(ledger.Change{Key: "t.sf.A", Entry: pending(first.Add(time.Hour))})
	tr.Apply(ledger.Change{Key: "t.sf.B", Entry: pending(first.Add(2 * time.Hour))})
	c, ok := tr.Clock("t")
	if !ok || c.Unhonoured != 2 || !c.OldestSince.Equal(first) || c.Key != "t.sf.A" || !c.MailboxOverdue() {
		t.Fatalf("clock %+v (ok %v): want 2 waiting, the oldest since %s, overdue", c, ok, first)
	}
	synced := pending(first)
	synced.State = optout.StateSynced
	tr.Apply(ledger.Change{Key: "t.sf.A", Entry: synced})
	tr.Apply(ledger.Change{Key: "t.sf.B", Deleted: true})
	if c, _ := tr.Clock("t"); c.Unhonoured != 0 || c.AgeSeconds != 0 {
		t.Fatalf("after a confirmation and a delete: %+v, want nothing waiting", c)
	}
	if got := tr.Clocks(); len(got) != 1 || got["t"].Unhonoured != 0 {
		t.Fatalf("Clocks: %+v, want tenant t at 0", got)
	}
}

// TestUnknownUntilTheLedgerIsRead: before the follower has read the whole
// ledger the clock is unknown (no metric, not 0).
func TestUnknownUntilTheLedgerIsRead(t *testing.T) {
	tr := NewTracker(zerolog.Nop())
	tr.Apply(ledger.Change{Key: "t.sf.A", Entry: optout.Entry{OptedOut: true, State: optout.StatePending, DecidedAt: time.Now()}})
	if _, ok := tr.Clock("t"); ok || tr.Clocks() != nil {
		t.Fatal("a clock before the ledger is read")
	}
}

// TestPanelShowsBothDeadlines: past 48 hours the page says the deadline is
// overdue and by how much, and how long is left of the 10 business days.
func TestPanelShowsBothDeadlines(t *testing.T) {
	asked := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC) // a Tuesday
	tr := NewTracker(zerolog.Nop())
	tr.Now = func() time.Time { return asked.Add(50 * time.Hour) }
	tr.loaded.Store(true)
	tr.Apply(ledger.Change{Key: "t.sf.A", Entry: optout.Entry{OptedOut: true, State: optout.StatePending, DecidedAt: asked}})
	var b strings.Builder
	if err := (Panel{Tracker: tr}).Render(context.Background(), &b, "t"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`class="notice error"`, "2 d 2 h ago", "2026-12-03T09:00:00Z", "overdue by 2 h 0 min",
		"2026-12-15T09:00:00Z", "11 d 22 h", "t.sf.A"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the panel does not show %q:\n%s", want, b.String())
		}
	}
}
