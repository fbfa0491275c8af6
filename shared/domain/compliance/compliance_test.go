package compliance_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/compliance"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestBusinessDaysSkipWeekends(t *testing.T) {
	cases := []struct {
		from, to string
		want     float64
	}{
		{"2026-12-07T12:00:00Z", "2026-12-07T18:00:00Z", 0.25}, // Monday
		{"2026-12-04T12:00:00Z", "2026-12-07T12:00:00Z", 1},    // Friday noon to Monday noon
		{"2026-12-05T10:00:00Z", "2026-12-06T23:00:00Z", 0},    // inside a weekend
		{"2026-12-05T10:00:00Z", "2026-12-19T10:00:00Z", 10},   // Saturday to Saturday two weeks on
		{"2026-12-07T12:00:00Z", "2026-12-07T11:00:00Z", 0},    // backwards
	}
	for _, c := range cases {
		if got := compliance.BusinessDays(at(c.from), at(c.to)); got != c.want {
			t.Errorf("BusinessDays(%s, %s) = %v, want %v", c.from, c.to, got, c.want)
		}
	}
}

func TestBusinessDeadlineIsTenBusinessDaysLater(t *testing.T) {
	cases := []struct{ from, want string }{
		{"2026-12-04T15:00:00Z", "2026-12-18T15:00:00Z"}, // Friday: two calendar weeks
		{"2026-12-05T15:00:00Z", "2026-12-19T00:00:00Z"}, // Saturday: the end of the second Friday
		{"2026-12-07T00:00:00Z", "2026-12-19T00:00:00Z"}, // Monday midnight
		{"2026-12-09T09:30:00Z", "2026-12-23T09:30:00Z"}, // Wednesday
	}
	for _, c := range cases {
		got := compliance.BusinessDeadline(at(c.from), compliance.BusinessDaysWindow)
		if !got.Equal(at(c.want)) {
			t.Errorf("BusinessDeadline(%s) = %s, want %s", c.from, got, c.want)
		}
		if d := compliance.BusinessDays(at(c.from), got); d != compliance.BusinessDaysWindow {
			t.Errorf("BusinessDays to the deadline of %s = %v, want 10", c.from, d)
		}
	}
}

func TestUnhonouredIsAPendingOptOut(t *testing.T) {
	since := at("2026-12-01T10:00:00Z")
	cases := []struct {
		name string
		e    optout.Entry
		want bool
	}{
		{"pending opt-out", optout.Entry{OptedOut: true, State: optout.StatePending, DecidedAt: since}, true},
		{"confirmed opt-out", optout.Entry{OptedOut: true, State: optout.StateSynced, DecidedAt: since}, false},
		{"pending resubscribe", optout.Entry{OptedOut: false, State: optout.StatePending, DecidedAt: since}, false},
		{"parked opt-out", optout.Entry{OptedOut: true, State: optout.StateParked, DecidedAt: since}, false},
		{"failed opt-out (a dead letter)", optout.Entry{OptedOut: true, State: optout.StateFailed, DecidedAt: since}, false},
		{"merged", optout.Entry{OptedOut: true, State: optout.StatePending, DecidedAt: since, MergedInto: "x"}, false},
	}
	for _, c := range cases {
		got, ok := compliance.Unhonoured(c.e)
		if ok != c.want || (ok && !got.Equal(since)) {
			t.Errorf("%s: Unhonoured = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
}

func TestClockAgainstBothDeadlines(t *testing.T) {
	since := at("2026-12-04T15:00:00Z") // a Friday
	c := compliance.NewClock(at("2026-12-07T15:00:00Z"), 2, since, "acme.sf.003")
	if c.AgeSeconds != 72*3600 || c.BusinessDays != 1 {
		t.Fatalf("age %v s, %v business days; want 259200 s, 1", c.AgeSeconds, c.BusinessDays)
	}
	if !c.MailboxOverdue() || c.BusinessDaysOverdue() {
		t.Fatalf("after 72 h and 1 business day: mailbox overdue %v (want true), business days overdue %v (want false)",
			c.MailboxOverdue(), c.BusinessDaysOverdue())
	}
	if !c.MailboxDeadline.Equal(at("2026-12-06T15:00:00Z")) || !c.BusinessDaysDeadline.Equal(at("2026-12-18T15:00:00Z")) {
		t.Fatalf("deadlines %s and %s", c.MailboxDeadline, c.BusinessDaysDeadline)
	}
	none := compliance.NewClock(at("2026-12-07T15:00:00Z"), 0, time.Time{}, "")
	if none.AgeSeconds != 0 || none.MailboxOverdue() || !none.OldestSince.IsZero() {
		t.Fatalf("nothing owed: %+v", none)
	}
}
