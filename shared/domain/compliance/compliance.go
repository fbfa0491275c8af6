// Package compliance is the compliance clock: how long the oldest opt-out
// not yet honoured in Salesforce has waited, against the two deadlines a
// sender is held to: 48 hours (the large mailbox providers' rule for
// one-click unsubscribes) and 10 business days (CAN-SPAM).
//
// Business days are Monday to Friday in UTC, for every tenant: the clock
// then needs no tenant setting, and every replica and optoutctl agree. In a
// US zone the count is shifted by a few hours at the edges of a weekend
// (never by a day); public holidays count as business days, which can only
// bring the deadline earlier. Alerts fire days before either deadline.
package compliance

import (
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

const (
	// MailboxWindow is the mailbox providers' deadline.
	MailboxWindow = 48 * time.Hour
	// BusinessDaysWindow is CAN-SPAM's deadline, in business days.
	BusinessDaysWindow = 10
)

// Unhonoured reports whether e is an opt-out in force that Salesforce has
// not confirmed, and since when the person has asked. It is exactly the
// state machine's PENDING with an opt-out as the latest wish: settle sets
// PENDING when Entry.Target (on the tenant's field, at the entry's last
// write) says a write is due, and a latest wish to opt out makes the value
// due true. A parked opt-out (no Salesforce id yet) has nothing to write
// to, and a failed one is a dead letter (its own alert): neither is on the
// clock. A resubscribed person owes nothing.
func Unhonoured(e optout.Entry) (since time.Time, ok bool) {
	if !e.OptedOut || e.State != optout.StatePending || e.MergedInto != "" {
		return time.Time{}, false
	}
	return e.DecidedAt.UTC(), true
}

// BusinessDays is how many days of Monday-to-Friday time (UTC) lie between
// from and to, fractions included; 0 when to is not after from.
func BusinessDays(from, to time.Time) float64 {
	from, to = from.UTC(), to.UTC()
	if !to.After(from) {
		return 0
	}
	var d time.Duration
	for day := midnight(from); day.Before(to); day = day.AddDate(0, 0, 1) {
		if weekend(day) {
			continue
		}
		lo, hi := maxTime(day, from), minTime(day.AddDate(0, 0, 1), to)
		if hi.After(lo) {
			d += hi.Sub(lo)
		}
	}
	return d.Hours() / 24
}

// BusinessDeadline is when n business days (as BusinessDays counts them)
// have passed since from.
func BusinessDeadline(from time.Time, n int) time.Time {
	from = from.UTC()
	left := time.Duration(n) * 24 * time.Hour
	for day := midnight(from); ; day = day.AddDate(0, 0, 1) {
		if weekend(day) {
			continue
		}
		lo, hi := maxTime(day, from), day.AddDate(0, 0, 1)
		if span := hi.Sub(lo); span >= left {
			return lo.Add(left)
		} else if span > 0 {
			left -= span
		}
	}
}

func midnight(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func weekend(day time.Time) bool {
	wd := day.Weekday()
	return wd == time.Saturday || wd == time.Sunday
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Clock is a tenant's compliance clock at a moment (At): the oldest
// unhonoured opt-out and where it stands against both deadlines. With
// Unhonoured 0 there is nothing owed and the other fields are zero.
type Clock struct {
	At time.Time `json:"at"`
	// Unhonoured counts the tenant's opt-outs not yet honoured.
	Unhonoured int `json:"unhonoured"`
	// OldestSince is when the oldest of them was asked for; Key is its
	// ledger key (no email: keys are ids).
	OldestSince time.Time `json:"oldestSince,omitzero"`
	Key         string    `json:"key,omitempty"`
	// AgeSeconds and BusinessDays are how long it has waited, in seconds
	// and in business days.
	AgeSeconds   float64 `json:"ageSeconds"`
	BusinessDays float64 `json:"businessDays"`
	// MailboxDeadline is OldestSince + 48 hours; BusinessDaysDeadline
	// OldestSince + 10 business days.
	MailboxDeadline      time.Time `json:"mailboxDeadline,omitzero"`
	BusinessDaysDeadline time.Time `json:"businessDaysDeadline,omitzero"`
}

// NewClock is the clock of n unhonoured opt-outs whose oldest was asked for
// at oldest (under key), read at now.
func NewClock(now time.Time, n int, oldest time.Time, key string) Clock {
	c := Clock{At: now.UTC(), Unhonoured: n}
	if n == 0 || oldest.IsZero() {
		return c
	}
	c.OldestSince, c.Key = oldest.UTC(), key
	c.AgeSeconds = max(now.Sub(oldest).Seconds(), 0)
	c.BusinessDays = BusinessDays(oldest, now)
	c.MailboxDeadline = c.OldestSince.Add(MailboxWindow)
	c.BusinessDaysDeadline = BusinessDeadline(oldest, BusinessDaysWindow)
	return c
}

// Age is how long the oldest unhonoured opt-out has waited.
func (c Clock) Age() time.Duration { return time.Duration(c.AgeSeconds * float64(time.Second)) }

// MailboxOverdue and BusinessDaysOverdue report whether a deadline has
// passed.
func (c Clock) MailboxOverdue() bool {
	return c.Unhonoured > 0 && !c.At.Before(c.MailboxDeadline)
}

// BusinessDaysOverdue reports whether the CAN-SPAM deadline has passed.
func (c Clock) BusinessDaysOverdue() bool {
	return c.Unhonoured > 0 && !c.At.Before(c.BusinessDaysDeadline)
}
