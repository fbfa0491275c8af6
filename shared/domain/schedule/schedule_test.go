package schedule_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/schedule"
)

// The tenant defaults (shared/store/tenant), which the domain cannot import.
const defaultTime, defaultZone = "20:00", "America/Los_Angeles"

func clock(t *testing.T, hhmm, zone string) schedule.Clock {
	t.Helper()
	c, err := schedule.Parse(hhmm, zone)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The default slot, 20:00 America/Los_Angeles, on the days around the 2026
// changes (8 March: PST→PDT; 1 November: PDT→PST), in UTC.
func TestDefaultSlotAcrossDST(t *testing.T) {
	c := clock(t, defaultTime, defaultZone)
	for _, tc := range []struct {
		date string
		utc  string
	}{
		{"2026-03-06", "2026-03-07T04:00:00Z"}, // PST, UTC-8
		{"2026-03-07", "2026-03-08T04:00:00Z"},
		{"2026-03-08", "2026-03-09T03:00:00Z"}, // change day, evening already PDT
		{"2026-03-09", "2026-03-10T03:00:00Z"}, // PDT, UTC-7
		{"2026-10-31", "2026-11-01T03:00:00Z"},
		{"2026-11-01", "2026-11-02T04:00:00Z"}, // change day, evening already PST
		{"2026-11-02", "2026-11-03T04:00:00Z"},
	} {
		d, _ := time.Parse("2006-01-02", tc.date)
		got := c.On(d.Year(), d.Month(), d.Day())
		if got.UTC().Format(time.RFC3339) != tc.utc {
			t.Errorf("%s: slot %s; want %s", tc.date, got.UTC().Format(time.RFC3339), tc.utc)
		}
		if l := got.In(c.Loc); l.Hour() != 20 || l.Minute() != 0 {
			t.Errorf("%s: slot at %s local; want 20:00", tc.date, l)
		}
	}
}

// Walking minute by minute through a week around each change, Latest
// advances exactly once a local day, at 20:00 local, and Next agrees.
func TestLatestAndNextStepOncePerLocalDay(t *testing.T) {
	c := clock(t, defaultTime, defaultZone)
	for _, start := range []string{"2026-03-05T00:00:00Z", "2026-10-29T00:00:00Z"} {
		now, _ := time.Parse(time.RFC3339, start)
		end := now.Add(6 * 24 * time.Hour)
		prev := c.Latest(now)
		changes := 0
		for ; now.Before(end); now = now.Add(time.Minute) {
			l := c.Latest(now)
			if l.After(now) {
				t.Fatalf("Latest(%s) = %s is in the future", now, l)
			}
			if !l.Equal(prev) {
				changes++
				if loc := now.In(c.Loc); loc.Hour() != 20 || loc.Minute() != 0 {
					t.Fatalf("slot changed at %s local; want 20:00", loc)
				}
				if !c.Next(prev).Equal(l) {
					t.Fatalf("Next(%s) = %s; Latest moved to %s", prev, c.Next(prev), l)
				}
				prev = l
			}
		}
		if changes != 6 {
			t.Fatalf("from %s: %d slots in 6 days; want 6", start, changes)
		}
	}
}

// A slot inside the spring-forward gap or the fall-back overlap still
// fires exactly once that day.
func TestSlotsInTheGapAndTheOverlapFireOnce(t *testing.T) {
	for _, hhmm := range []string{"02:30", "01:30"} {
		c := clock(t, hhmm, defaultZone)
		for _, day := range []string{"2026-03-08", "2026-11-01"} {
			d, _ := time.Parse("2006-01-02", day)
			from := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, c.Loc)
			to := time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, c.Loc)
			n := 0
			for s := c.Next(from); s.Before(to); s = c.Next(s) {
				n++
			}
			if n != 1 {
				t.Errorf("%s at %s: %d slots; want 1", day, hhmm, n)
			}
		}
	}
}

func TestParseRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct{ hhmm, zone string }{{"24:00", "UTC"}, {"8:00", "UTC"}, {"20:00", "Mars/Olympus"}, {"20:00", ""}} {
		if _, err := schedule.Parse(tc.hhmm, tc.zone); err == nil {
			t.Errorf("%q in %q accepted", tc.hhmm, tc.zone)
		}
	}
}
