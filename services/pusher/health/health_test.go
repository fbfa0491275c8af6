package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/tenant"
)

// clock is a fake time the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// records keeps what the tenant recorded for admins.
type records struct {
	mu   sync.Mutex
	puts []tenant.Health
	err  error
}

func (r *records) Put(_ context.Context, h tenant.Health) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.puts = append(r.puts, h)
	return r.err
}

func (r *records) last(t *testing.T) tenant.Health {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.puts) == 0 {
		t.Fatal("no health recorded")
	}
	return r.puts[len(r.puts)-1]
}

type fixture struct {
	clock  *clock
	store  *records
	logs   *bytes.Buffer
	modes  []tenant.Mode
	setup  error // what CheckSetup answers
	checks int
	h      *Tenant
}

var policy = Policy{Threshold: 3, Cooldown: time.Second, MaxCooldown: 5 * time.Second, Recheck: time.Minute, Reminder: 10 * time.Minute}

func newFixture() *fixture {
	f := &fixture{clock: &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, store: &records{}, logs: &bytes.Buffer{}}
	f.h = New("acme", policy, Deps{
		Now: f.clock.Now, Log: zerolog.New(f.logs).With().Str("tenant", "acme").Logger(), Store: f.store,
		Observe:    func(m tenant.Mode) { f.modes = append(f.modes, m) },
		CheckSetup: func(context.Context) error { f.checks++; return f.setup },
	})
	return f
}

// logged is the messages logged, in order.
func (f *fixture) logged(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["tenant"] != "acme" {
			t.Errorf("log line without the tenant: %s", line)
		}
		out = append(out, m["message"].(string))
	}
	return out
}

// Transient failures below the threshold change nothing; at it the breaker
// opens for the cooldown, doubling while failures go on, up to the cap.
func TestBreakerOpensAtTheThresholdAndItsCooldownDoubles(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	f.h.CallFailed("503")
	f.h.CallFailed("503")
	if d := f.h.HoldOff(ctx); d != 0 {
		t.Fatalf("after 2 failures (threshold 3) HoldOff = %s; want 0", d)
	}
	if len(f.store.puts) != 0 {
		t.Fatalf("a failure below the threshold recorded %+v", f.store.puts)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		f.h.CallFailed("503")
		if d := f.h.HoldOff(ctx); d != want {
			t.Fatalf("failure %d: HoldOff = %s; want %s", 3+i, d, want)
		}
		h := f.store.last(t)
		if h.Mode != tenant.ModeBackoff || h.Reason != "Salesforce keeps failing: 503" || !h.Until.Equal(f.clock.Now().Add(want)) {
			t.Fatalf("failure %d recorded %+v; want backoff until now+%s", 3+i, h, want)
		}
	}
	// The cooldown passes: the next batch is the probe.
	f.clock.advance(5 * time.Second)
	if d := f.h.HoldOff(ctx); d != 0 {
		t.Fatalf("after the cooldown HoldOff = %s; want 0 (the probe)", d)
	}
	f.h.CallSucceeded()
	if h := f.store.last(t); h.Mode != tenant.ModeHealthy || h.Reason != "" || !h.Until.IsZero() {
		t.Fatalf("after a success recorded %+v; want healthy", h)
	}
	// A success counts from zero again: two failures do not reopen it.
	f.h.CallFailed("503")
	f.h.CallFailed("503")
	if d := f.h.HoldOff(ctx); d != 0 {
		t.Fatalf("after a success and 2 failures HoldOff = %s; want 0", d)
	}
	if got, want := f.logged(t), []string{"tenant sync state changed", "tenant sync state changed"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logged %q; want only the two changes (backoff, healthy) %q", got, want)
	}
	if f.modes[len(f.modes)-1] != tenant.ModeHealthy {
		t.Fatalf("the mode metric last saw %s; want healthy", f.modes[len(f.modes)-1])
	}
}

// A success while healthy records nothing (one record per change, not per
// call).
func TestSuccessWhileHealthyRecordsNothing(t *testing.T) {
	f := newFixture()
	f.h.CallSucceeded()
	f.h.CallSucceeded()
	if len(f.store.puts) != 0 || len(f.modes) != 0 || f.logs.Len() != 0 {
		t.Fatalf("a healthy tenant's success recorded %+v, observed %v, logged %q", f.store.puts, f.modes, f.logs.String())
	}
}

// A spent allowance pauses the tenant until the pause is over; no setup
// check is made for it.
func TestAPauseHoldsUntilItEnds(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	f.h.Set(tenant.ModePaused, "daily API allowance spent", 5*time.Minute)
	f.clock.advance(time.Minute)
	if d := f.h.HoldOff(ctx); d != 4*time.Minute {
		t.Fatalf("HoldOff = %s; want 4m0s", d)
	}
	f.clock.advance(4 * time.Minute)
	if d := f.h.HoldOff(ctx); d != 0 {
		t.Fatalf("HoldOff after the pause = %s; want 0", d)
	}
	if f.checks != 0 {
		t.Fatalf("a paused tenant's setup was checked %d times", f.checks)
	}
}

// An unhealthy tenant waits for its recheck; a failing check holds it for
// another recheck with the check's reason, a passing one makes it healthy.
func TestUnhealthySetupIsRecheckedUntilFixed(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	f.h.Set(tenant.ModeUnhealthy, "no Salesforce credentials configured", policy.Recheck)
	since := f.store.last(t).Since
	if d := f.h.HoldOff(ctx); d != policy.Recheck || f.checks != 0 {
		t.Fatalf("before the recheck: HoldOff = %s, %d checks; want %s and none", d, f.checks, policy.Recheck)
	}
	f.clock.advance(policy.Recheck)
	f.setup = errors.New("field Foo__c is not writable")
	if d := f.h.HoldOff(ctx); d != policy.Recheck || f.checks != 1 {
		t.Fatalf("a failing recheck: HoldOff = %s, %d checks; want %s and 1", d, f.checks, policy.Recheck)
	}
	h := f.store.last(t)
	if h.Mode != tenant.ModeUnhealthy || h.Reason != "field Foo__c is not writable" || !h.Since.Equal(since) {
		t.Fatalf("after a failing recheck recorded %+v; want unhealthy with the check's reason, since %s", h, since)
	}
	f.clock.advance(policy.Recheck)
	f.setup = nil
	if d := f.h.HoldOff(ctx); d != 0 {
		t.Fatalf("a passing recheck: HoldOff = %s; want 0", d)
	}
	if h := f.store.last(t); h.Mode != tenant.ModeHealthy || !h.Since.Equal(f.clock.Now()) {
		t.Fatalf("after a passing recheck recorded %+v; want healthy since now", h)
	}
}

// A tenant that stays out of sync is logged when its state changes and
// then at most every Reminder, however often its reason changes; every
// call is recorded for admins all the same.
func TestAStateOutOfSyncIsLoggedOnChangeThenAsAReminder(t *testing.T) {
	f := newFixture()
	for i := range 5 {
		f.h.Set(tenant.ModeUnhealthy, "rejected "+string(rune('a'+i)), time.Minute)
		f.clock.advance(time.Minute)
	}
	if got := f.logged(t); len(got) != 1 || got[0] != "tenant sync state changed" {
		t.Fatalf("5 calls within the reminder logged %q; want one change", got)
	}
	if len(f.store.puts) != 5 || f.store.last(t).Reason != "rejected e" {
		t.Fatalf("recorded %d, last %+v; want 5, the last reason", len(f.store.puts), f.store.last(t))
	}
	f.clock.advance(policy.Reminder)
	f.h.Set(tenant.ModeUnhealthy, "rejected f", time.Minute)
	if got := f.logged(t); len(got) != 2 || got[1] != "tenant still not syncing" {
		t.Fatalf("past the reminder logged %q; want a reminder", got)
	}
}

// A failure to record the health is logged and changes nothing else.
func TestAFailedRecordIsLogged(t *testing.T) {
	f := newFixture()
	f.store.err = errors.New("kv down")
	f.h.Set(tenant.ModeBackoff, "503", time.Second)
	if d := f.h.HoldOff(context.Background()); d != time.Second {
		t.Fatalf("HoldOff = %s; want 1s", d)
	}
	if got := f.logged(t); len(got) != 2 || got[1] != "recording tenant health failed" {
		t.Fatalf("logged %q; want the change and the failed record", got)
	}
}
