package refmodel_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/internal/refmodel"
)

func TestOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	out := func(m int) refmodel.Event { return refmodel.Event{At: at(m), OptOut: true} }
	res := func(m int) refmodel.Event { return refmodel.Event{At: at(m)} }
	for _, c := range []struct {
		name          string
		evs           []refmodel.Event
		wish, anyOut  bool
		decided, last time.Time
		known         bool
	}{
		{"no events", nil, false, false, time.Time{}, time.Time{}, false},
		{"the newest wins, whatever the order", []refmodel.Event{res(3), out(1), out(2)}, false, true, at(3), at(2), true},
		{"an opt-out wins a tie, first", []refmodel.Event{out(5), res(5)}, true, true, at(5), at(5), true},
		{"an opt-out wins a tie, second", []refmodel.Event{res(5), out(5)}, true, true, at(5), at(5), true},
		{"only resubscribes", []refmodel.Event{res(1), res(2)}, false, false, at(2), time.Time{}, true},
		{"an older opt-out still counts for Email Opt Out", []refmodel.Event{out(1), res(2)}, false, true, at(2), at(1), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := refmodel.Of(c.evs)
			if w.Known != c.known || w.OptOut != c.wish || !w.DecidedAt.Equal(c.decided) || w.AnyOptOut != c.anyOut || !w.LastOptOutAt.Equal(c.last) {
				t.Fatalf("Of(%v) = %+v; want known %t, wish %t at %s, any opt-out %t, last %s", c.evs, w, c.known, c.wish, c.decided, c.anyOut, c.last)
			}
			if w.Salesforce(false) != c.wish {
				t.Errorf("sales field: %t, want the wish %t", w.Salesforce(false), c.wish)
			}
			if w.Salesforce(true) != c.anyOut {
				t.Errorf("Email Opt Out: %t, want %t (any opt-out)", w.Salesforce(true), c.anyOut)
			}
		})
	}
}
