// Package schedule computes a tenant's daily reconcile slots, and when its
// next scheduled run is (NextRun: one rule for the reconciler, which starts
// runs by it, and for optoutctl and the admin page, which say when):
// ScheduleTime (HH:MM) on each local date in ScheduleZone, so 20:00 America/Los_Angeles
// is 04:00 UTC in winter and 03:00 UTC in summer. Dates are stepped as
// calendar dates, never as 24-hour durations, so a slot never drifts across
// a daylight-saving change.
//
// A time that does not exist on a spring-forward day (02:30 in most US
// zones) resolves as time.Date does, to the same wall clock in the offset
// before the change (03:30 in the new offset); a time that occurs twice on a
// fall-back day fires once, at the instant time.Date picks. Either way each
// local date has exactly one slot.
package schedule

import (
	"fmt"
	"sync"
	"time"
)

var zones sync.Map // name → *time.Location; LoadLocation reads tzdata each call

func zone(name string) (*time.Location, error) {
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil || name == "" {
		return nil, fmt.Errorf("schedule zone %q: want an IANA zone such as America/Los_Angeles", name)
	}
	zones.Store(name, l)
	return l, nil
}

// Clock is a parsed schedule: a wall-clock time in a zone.
type Clock struct {
	Hour, Minute int
	Loc          *time.Location
}

// Parse reads a tenant's ScheduleTime (HH:MM) and ScheduleZone.
func Parse(hhmm, zoneName string) (Clock, error) {
	loc, err := zone(zoneName)
	if err != nil {
		return Clock{}, err
	}
	var h, m int
	if n, err := fmt.Sscanf(hhmm, "%2d:%2d", &h, &m); err != nil || n != 2 || h < 0 || h > 23 || m < 0 || m > 59 || len(hhmm) != 5 {
		return Clock{}, fmt.Errorf("schedule time %q: want HH:MM (24 h)", hhmm)
	}
	return Clock{Hour: h, Minute: m, Loc: loc}, nil
}

// On returns the slot of a local calendar date (day may be out of range;
// it is normalised like time.Date, so day 0 is the previous month's last).
func (c Clock) On(year int, month time.Month, day int) time.Time {
	return time.Date(year, month, day, c.Hour, c.Minute, 0, 0, c.Loc)
}

// Latest returns the newest slot at or before now.
func (c Clock) Latest(now time.Time) time.Time {
	y, m, d := now.In(c.Loc).Date()
	for i := 0; ; i++ {
		if s := c.On(y, m, d-i); !s.After(now) {
			return s
		}
	}
}

// Next returns the first slot strictly after t.
func (c Clock) Next(t time.Time) time.Time {
	y, m, d := t.In(c.Loc).Date()
	for i := 0; ; i++ {
		if s := c.On(y, m, d+i); s.After(t) {
			return s
		}
	}
}

// NextRun says when a tenant's next scheduled run is. The latest slot is
// due (due true) when no run claimed it or a newer one yet (claimed is the
// newest claimed slot) and sync was on at that slot: a slot from before
// syncSince (when sync was last turned on; zero when unknown, for settings
// stored before it was recorded) is never caught up, so turning sync on
// never starts a catch-up run at once. Otherwise the next run is the first
// slot after now.
func NextRun(c Clock, claimed, syncSince, now time.Time) (slot time.Time, due bool) {
	latest := c.Latest(now)
	if latest.After(claimed) && !latest.Before(syncSince) {
		return latest, true
	}
	return c.Next(now), false
}
