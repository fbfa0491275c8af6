// Package health keeps one tenant's sync health for the pusher: a circuit
// breaker over consecutive transient failures, the pause of a spent API
// allowance and the recheck of a broken setup. It says how long the tenant
// must not push, and records every state for admins (tenant.Health).
package health

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/tenant"
)

// Policy shapes the breaker and the rechecks (push.Config's values).
type Policy struct {
	// Threshold consecutive failed calls open the breaker for Cooldown,
	// doubling while failures go on, up to MaxCooldown.
	Threshold   int
	Cooldown    time.Duration
	MaxCooldown time.Duration
	// Recheck is how often an unhealthy tenant's setup is rechecked.
	Recheck time.Duration
	// Reminder is how often a tenant that stays out of sync is logged
	// again (its changes are logged as they happen).
	Reminder time.Duration
}

// Recorder keeps the tenant's health where admins read it
// (tenant.HealthStore); a failure to record is logged, never a reason to
// stop pushing.
type Recorder interface {
	Put(ctx context.Context, h tenant.Health) error
}

// Deps are what a Tenant's health reaches outside itself.
type Deps struct {
	Now   func() time.Time
	Log   zerolog.Logger // carries the tenant field
	Store Recorder
	// Observe sees every recorded mode (the tenant-mode metric); nil: none.
	Observe func(tenant.Mode)
	// CheckSetup verifies an unhealthy tenant's setup (credentials that
	// work, a writable field); nil error: fixed.
	CheckSetup func(ctx context.Context) error
}

// Tenant is one tenant's health. Its methods are safe for concurrent use
// by the tenant's batches.
type Tenant struct {
	tenant string
	policy Policy
	deps   Deps

	mu       sync.Mutex
	failures int           // consecutive transient failures
	health   tenant.Health // as last recorded
	logged   time.Time     // when the state was last logged
}

// New is a tenant's health, healthy until told otherwise.
func New(tenantID string, p Policy, d Deps) *Tenant {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Tenant{tenant: tenantID, policy: p, deps: d}
}

// HoldOff says how long the tenant must not push, rechecking an unhealthy
// tenant's setup when its recheck is due: 0 once a pause is over (the next
// batch is the probe) or the setup is fixed.
func (t *Tenant) HoldOff(ctx context.Context) time.Duration {
	t.mu.Lock()
	h := t.health
	t.mu.Unlock()
	now := t.deps.Now()
	switch h.Mode {
	case tenant.ModeBackoff, tenant.ModePaused:
		if now.Before(h.Until) {
			return h.Until.Sub(now)
		}
		return 0
	case tenant.ModeUnhealthy:
		if now.Before(h.Until) {
			return h.Until.Sub(now)
		}
		if err := t.deps.CheckSetup(ctx); err != nil {
			t.Set(tenant.ModeUnhealthy, err.Error(), t.policy.Recheck)
			return t.policy.Recheck
		}
		t.Set(tenant.ModeHealthy, "", 0)
	}
	return 0
}

// Set records the tenant's mode, held for hold (0: not held).
func (t *Tenant) Set(mode tenant.Mode, reason string, hold time.Duration) {
	t.mu.Lock()
	now := t.deps.Now().UTC()
	prev := t.health
	h := tenant.Health{Tenant: t.tenant, Mode: mode, Reason: reason, Since: prev.Since}
	if prev.Mode != mode || prev.Since.IsZero() {
		h.Since = now
	}
	if hold > 0 {
		h.Until = now.Add(hold)
	}
	if mode == tenant.ModeHealthy {
		t.failures = 0
	}
	t.health = h
	// A state is logged when it changes; while a tenant stays out of sync
	// a reminder is logged at most every Reminder (its reason may change
	// with every failing call: that is for the health record, not the log).
	changed := prev.Mode != mode
	remind := !changed && mode != tenant.ModeHealthy && now.Sub(t.logged) >= t.policy.Reminder
	if changed || remind {
		t.logged = now
	}
	t.mu.Unlock()

	log := t.deps.Log
	switch {
	case changed && mode == tenant.ModeHealthy:
		log.Info().Str("mode", string(mode)).Msg("tenant sync state changed")
	case changed:
		log.Warn().Str("mode", string(mode)).Str("reason", reason).Time("until", h.Until).Msg("tenant sync state changed")
	case remind:
		log.Warn().Str("mode", string(mode)).Str("reason", reason).Time("since", h.Since).Msg("tenant still not syncing")
	}
	if t.deps.Observe != nil {
		t.deps.Observe(mode)
	}
	if t.deps.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.deps.Store.Put(ctx, h); err != nil {
		log.Warn().Err(err).Msg("recording tenant health failed")
	}
}

// CallFailed counts a transient failure and opens the breaker at the
// threshold, with a cooldown that doubles while failures go on.
func (t *Tenant) CallFailed(reason string) {
	t.mu.Lock()
	t.failures++
	n := t.failures
	t.mu.Unlock()
	if n < t.policy.Threshold {
		return
	}
	cool := t.policy.Cooldown << min(n-t.policy.Threshold, 10)
	t.Set(tenant.ModeBackoff, "Salesforce keeps failing: "+reason, min(cool, t.policy.MaxCooldown))
}

// CallSucceeded closes the breaker: the failures count from zero again,
// and a tenant out of sync is healthy.
func (t *Tenant) CallSucceeded() {
	t.mu.Lock()
	mode := t.health.Mode
	t.failures = 0
	t.mu.Unlock()
	if mode != tenant.ModeHealthy && mode != "" {
		t.Set(tenant.ModeHealthy, "", 0)
	}
}
