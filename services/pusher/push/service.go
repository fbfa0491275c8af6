// Package push writes each opt-out to Salesforce within seconds, level-
// triggered like a Kubernetes controller: the replica reads every tenant's
// events from one shared consumer and folds each into the ledger (package
// shared/ingest); one runner per tenant queues the persons left dirty in a
// coalescing work queue and writes each person's current desired value in
// sObject Collections batches through a shared worker pool. An event that
// left its person dirty stays unacked until a write leaves the person
// clean, or a few seconds, after which the ledger's dirty set takes over
// (held.go); a periodic sweep of that set re-finds what a queue lost (a
// restart, another replica).
package push

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/deadletter"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/ingest"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/sfcreds"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// Config tunes the pusher.
type Config struct {
	// Workers bounds concurrent Salesforce calls of this replica. Calls
	// wait on Salesforce, not on CPU, so it is sized for many tenants at
	// once: a thousand trickling tenants need about a hundred calls in
	// flight, and a slow tenant's TenantConcurrency slots must not starve
	// them.
	Workers int
	// BatchSize is the most records per Collections call (≤ 200).
	BatchSize int
	// Linger is the most a batch waits for company after its first
	// person, and only while more of the tenant's events are on their way
	// (delivered and being folded, or arriving in a burst): a lone opt-out
	// goes at once, a burst fills whole batches (fewer Salesforce calls).
	Linger time.Duration
	// RetryHorizon is how long a transiently failing event is retried
	// before it goes to the DLQ (with an alerting metric).
	RetryHorizon time.Duration
	// BackoffInitial and BackoffMax shape per-message redelivery delays.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// BreakerThreshold consecutive failed calls open a tenant's breaker
	// for BreakerCooldown (doubling while failures go on, up to BackoffMax).
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// QuotaPause is how long a tenant whose allowance is spent waits
	// before a probe.
	QuotaPause time.Duration
	// HealthRecheck is how often an unhealthy tenant's setup is rechecked.
	HealthRecheck time.Duration
	// UnhealthyReminder is how often a tenant that stays out of sync is
	// logged again (its changes are logged as they happen).
	UnhealthyReminder time.Duration
	// DiscoveryInterval is how often the events stream and the settings
	// are scanned for tenants that have no runner yet (their ledger is
	// resynced; events create runners as they arrive).
	DiscoveryInterval time.Duration
	// TenantConcurrency caps one tenant's batches in flight, so slow
	// tenants cannot take every worker. Four keep a sales-field tenant
	// (a read, then a write: two calls a batch) real-time at 10 opt-outs a
	// second.
	TenantConcurrency int
	// SweepInterval is how often the dirty set is swept into the queues;
	// ResyncInterval how often the whole ledger is (a lost marker).
	SweepInterval  time.Duration
	ResyncInterval time.Duration
	// ClaimTTL is how long a sales-field write's claim holds other writers
	// off the person (ledger.Claim); the call is given up before it ends.
	ClaimTTL time.Duration
}

// DefaultConfig is tuned for "within seconds" with few API calls.
func DefaultConfig() Config {
	return Config{
		Workers:           128,
		BatchSize:         200,
		Linger:            5 * time.Second,
		RetryHorizon:      24 * time.Hour,
		BackoffInitial:    time.Second,
		BackoffMax:        5 * time.Minute,
		BreakerThreshold:  5,
		BreakerCooldown:   5 * time.Second,
		QuotaPause:        5 * time.Minute,
		HealthRecheck:     time.Minute,
		UnhealthyReminder: 10 * time.Minute,
		DiscoveryInterval: 2 * time.Second,
		TenantConcurrency: 4,
		SweepInterval:     10 * time.Second,
		ResyncInterval:    time.Hour,
		ClaimTTL:          ledger.DefaultClaimTTL,
	}
}

// Clients gives a tenant's Salesforce client.
type Clients interface {
	Get(ctx context.Context, tenant string) (sfcreds.Client, error)
}

// Service is one pusher replica.
type Service struct {
	Cfg      Config
	JS       jetstream.JetStream
	Topology natsx.Topology
	Ledger   *ledger.Ledger
	Settings *tenant.Cache
	Clients  Clients
	Health   tenant.HealthStore
	Log      zerolog.Logger
	Metrics  *Metrics
	Now      func() time.Time

	ingester *ingest.Ingester
	slots    chan struct{}
	scans    chan struct{} // runners' catch-up scans at once
	folds    chan struct{} // events being folded at once, all tenants
	mu       sync.Mutex
	runners  map[string]*runner
	wg       sync.WaitGroup
	// pulling is set once the shared consumer exists: the per-tenant
	// consumers it replaces may then be deleted.
	pulling atomic.Bool
}

// Run pulls and pushes until ctx ends, then stops pulling, finishes the
// batches in flight and returns.
func (s *Service) Run(ctx context.Context) error {
	if s.Cfg.BatchSize <= 0 || s.Cfg.BatchSize > 200 {
		return fmt.Errorf("pusher: batch size %d: want 1 to 200", s.Cfg.BatchSize)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Cfg.ClaimTTL <= 0 {
		s.Cfg.ClaimTTL = ledger.DefaultClaimTTL
	}
	if s.Metrics == nil {
		m, err := NewMetrics(nil)
		if err != nil {
			return err
		}
		s.Metrics = m
	}
	s.slots = make(chan struct{}, max(1, s.Cfg.Workers))
	s.scans = make(chan struct{}, scanConcurrency)
	s.folds = make(chan struct{}, ingestConcurrency)
	s.ingester = &ingest.Ingester{Ledger: s.Ledger, Topology: s.Topology, Now: s.Now,
		DLQ:   deadletter.DeadLetterer{JS: s.JS, Topology: s.Topology},
		Field: func(t string) string { return s.settings(t).TargetField() }}
	s.runners = map[string]*runner{}
	defer s.wg.Wait()
	s.wg.Go(func() { s.sweep(ctx) })
	s.wg.Go(func() { s.settleHeld(ctx) })
	s.wg.Go(func() { s.pull(ctx) })

	tick := time.NewTicker(s.Cfg.DiscoveryInterval)
	defer tick.Stop()
	var cleaned time.Time
	for {
		if err := s.discover(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Msg("tenant discovery failed; retrying")
		}
		if s.pulling.Load() && time.Since(cleaned) >= legacyCleanupInterval {
			cleaned = time.Now()
			s.deleteLegacyConsumers(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// legacyCleanupInterval is how often the per-tenant consumers of an
// earlier version are looked for (a replica of that version may still run
// during a rolling upgrade, and keeps its consumers until it stops).
const legacyCleanupInterval = 30 * time.Second

// deleteLegacyConsumers deletes the per-tenant consumers the shared
// consumer replaced, once no replica pulls from them.
func (s *Service) deleteLegacyConsumers(ctx context.Context) {
	deleted, kept, err := eventstream.DeleteIdleLegacyConsumers(ctx, s.JS, s.Topology)
	if err != nil && ctx.Err() == nil {
		s.Log.Warn().Err(err).Msg("deleting the per-tenant consumers of an earlier version failed; retrying")
	}
	if len(deleted) > 0 || kept > 0 {
		s.Log.Info().Int("deleted", len(deleted)).Int("still_pulled", kept).Str("consumer", s.Topology.PusherConsumer()).
			Msg("per-tenant consumers of an earlier version replaced by the shared consumer")
	}
}

// discover starts a runner for every tenant with settings or stored events.
func (s *Service) discover(ctx context.Context) error {
	tenants, err := natsx.EventTenants(ctx, s.JS, s.Topology)
	if s.Settings != nil {
		tenants = append(tenants, s.Settings.Tenants()...)
	}
	for _, t := range tenants {
		if event.ValidTenant(t) { // a junk token's events are only dead-lettered
			s.ensureRunner(ctx, t)
		}
	}
	return err
}

func (s *Service) ensureRunner(ctx context.Context, t string) *runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.runners[t]; ok {
		return r
	}
	r := s.newRunner(t)
	r.q.onTake = func(wait time.Duration) { s.Metrics.stage(StageQueue, targetOf(s.settings(t).TargetField()), wait) }
	// Its catch-up resyncs it; the periodic resync counts from now.
	r.resyncedAt.Store(time.Now().UnixNano())
	s.runners[t] = r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.run(ctx)
	}()
	return r
}

func (s *Service) newRunner(t string) *runner {
	return &runner{svc: s, tenant: t, log: s.Log.With().Str("tenant", t).Logger(), q: newQueue(), seen: newSeen(), held: newHeld(holdFor(s.Topology.PusherAckWait), max(1, s.Topology.PusherMaxAckPending/heldShare))}
}

// breaker tracks one tenant's consecutive transient failures and health.
type breaker struct {
	mu       sync.Mutex
	failures int
	health   tenant.Health
	logged   time.Time // when the tenant's state was last logged
}

// runner pushes one tenant, and folds the events the replica's puller
// hands it.
type runner struct {
	svc    *Service
	tenant string
	log    zerolog.Logger
	br     breaker
	q      *queue
	seen   *seen
	held   *held
	// folding counts the tenant's events delivered and not yet folded.
	folding atomic.Int64
	// arrived is when the tenant's last event reached the puller, and
	// gap the time between it and the one before (unix ns, ns).
	arrived, gap atomic.Int64
	// resyncedAt is when the tenant's ledger was last resynced (unix ns).
	resyncedAt atomic.Int64
}

// A tenant's events that reach the puller burstGap or less apart are a
// burst: more are likely on their way even when none is being folded (the
// next may still be in the pull buffer, behind other tenants' events, or
// in the next pull's answer), so a batch lingers for them up to burstFresh
// after the last. A trickle (10 a second is 100 ms apart) never lingers.
const (
	burstGap   = 10 * time.Millisecond
	burstFresh = 50 * time.Millisecond
)

// delivered records one of the tenant's events handed to a fold.
func (r *runner) delivered() {
	r.folding.Add(1)
	now := time.Now().UnixNano()
	r.gap.Store(now - r.arrived.Swap(now))
}

// moreComing says whether events of the tenant are on their way to the
// queue, so a batch that is not full yet should linger for them. The
// consumer is shared by every tenant, so its pending count says nothing
// about this one: what the replica holds of the tenant, and how its
// events have been arriving, do.
func (r *runner) moreComing() bool {
	if r.folding.Load() > 0 {
		return true
	}
	return time.Duration(r.gap.Load()) <= burstGap && time.Since(time.Unix(0, r.arrived.Load())) < burstFresh
}

// run pushes the tenant's dirty persons while the tenant may (ingest needs
// only NATS, so the replica's puller folds its events whatever its
// health), and catches up with what the ledger already holds.
func (r *runner) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.catchUp(ctx) })
	stop := context.AfterFunc(ctx, r.q.Close)
	defer stop()
	r.dispatch(ctx)
	wg.Wait()
	// Every batch is over: what is still held is marked and acked, or,
	// where that fails, redelivered after AckWait.
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r.held.due(final, true, r.svc.Ledger.MarkHeld)
}

// settleHeld marks and acks every tenant's events held past the hold,
// until ctx ends: one loop for the replica, not a ticker per tenant.
func (s *Service) settleHeld(ctx context.Context) {
	tick := time.NewTicker(holdFor(s.Topology.PusherAckWait) / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			for _, r := range s.runnerList() {
				r.held.due(ctx, false, s.Ledger.MarkHeld)
			}
		}
	}
}

// pull folds every tenant's events from the shared consumer until ctx
// ends, retrying after failures.
func (s *Service) pull(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.pullOnce(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Str("consumer", s.Topology.PusherConsumer()).Msg("pulling events failed; retrying")
			sleep(ctx, time.Second)
		}
	}
}

// pullOnce reads the shared consumer and hands each event to its tenant's
// runner (made on demand): one goroutine reads, and each event is folded
// in a goroutine of its own, at most ingestConcurrency at once across
// every tenant. Folds commute and take milliseconds, never waiting for
// Salesforce, so one tenant's events cannot hold up another's for long.
func (s *Service) pullOnce(ctx context.Context) error {
	cons, err := eventstream.EnsurePusherConsumer(ctx, s.JS, s.Topology)
	if err != nil {
		return err
	}
	s.pulling.Store(true)
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer))
	if err != nil {
		return fmt.Errorf("pull %s: %w", s.Topology.PusherConsumer(), err)
	}
	// Stop, not Drain: messages still buffered are redelivered after AckWait.
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("pull %s: next: %w", s.Topology.PusherConsumer(), err)
		}
		r := s.runnerOf(ctx, msg.Subject())
		r.delivered()
		s.folds <- struct{}{}
		wg.Go(func() {
			defer func() { <-s.folds }()
			// A message in hand is settled even when shutdown starts.
			key, at := r.ingest(context.WithoutCancel(ctx), msg)
			// Folded before queued, so a Take that sees the key also sees
			// whether more are coming.
			r.folding.Add(-1)
			if key != "" {
				if at.Held {
					r.held.add(key, msg, at.Rev)
					at.Held = false // a batch asks held, not the hint
				}
				r.seen.remember(key, at)
				r.q.Add(key)
			}
		})
	}
	return nil
}

// runnerOf is the runner of an event's tenant. An event whose tenant token
// is no tenant id can only be dead-lettered: it gets a runner of its own
// that is never started, so junk tokens cost no goroutines or ledger
// scans.
func (s *Service) runnerOf(ctx context.Context, subject string) *runner {
	t, ok := s.Topology.TenantFromEventsSubject(subject)
	if ok && event.ValidTenant(t) {
		return s.ensureRunner(ctx, t)
	}
	return s.newRunner(t)
}

// ingestConcurrency is the events folded at once by a replica, every
// tenant's together: a fold is a few ledger round trips, so this many keep
// the server busy in a burst, and a thousand trickling tenants need a
// handful.
const ingestConcurrency = 64

// pullBuffer is the most events a replica has been delivered and not yet
// handed to a fold (PullMaxMessages).
const pullBuffer = 1000

// holdOff says how long the tenant must not push, rechecking an unhealthy
// tenant's setup when its recheck is due.
func (r *runner) holdOff(ctx context.Context) time.Duration {
	r.br.mu.Lock()
	h := r.br.health
	r.br.mu.Unlock()
	now := r.svc.Now()
	switch h.Mode {
	case tenant.ModeBackoff, tenant.ModePaused:
		if now.Before(h.Until) {
			return h.Until.Sub(now)
		}
		// The pause is over: the next batch is the probe.
		return 0
	case tenant.ModeUnhealthy:
		if now.Before(h.Until) {
			return h.Until.Sub(now)
		}
		if err := r.checkSetup(ctx); err != nil {
			r.setMode(tenant.ModeUnhealthy, err.Error(), r.svc.Cfg.HealthRecheck)
			return r.svc.Cfg.HealthRecheck
		}
		r.setMode(tenant.ModeHealthy, "", 0)
	}
	return 0
}

// checkSetup verifies what an unhealthy tenant needs: credentials that work
// and a writable opt-out field on Contact and Lead.
func (r *runner) checkSetup(ctx context.Context) error {
	client, err := r.svc.Clients.Get(ctx, r.tenant)
	if err != nil {
		return err
	}
	field := r.svc.settings(r.tenant).TargetField()
	return client.CheckOptOutField(ctx, field)
}

// setMode records the tenant's health for admins and for holdOff.
func (r *runner) setMode(mode tenant.Mode, reason string, hold time.Duration) {
	r.br.mu.Lock()
	now := r.svc.Now().UTC()
	prev := r.br.health
	h := tenant.Health{Tenant: r.tenant, Mode: mode, Reason: reason, Since: prev.Since}
	if prev.Mode != mode || prev.Since.IsZero() {
		h.Since = now
	}
	if hold > 0 {
		h.Until = now.Add(hold)
	}
	if mode == tenant.ModeHealthy {
		r.br.failures = 0
	}
	r.br.health = h
	// A state is logged when it changes; while a tenant stays out of sync
	// a reminder is logged at most every UnhealthyReminder (its reason may
	// change with every failing call: that is for the health record, not
	// the log).
	changed := prev.Mode != mode
	remind := !changed && mode != tenant.ModeHealthy && now.Sub(r.br.logged) >= r.svc.Cfg.UnhealthyReminder
	if changed || remind {
		r.br.logged = now
	}
	r.br.mu.Unlock()

	switch {
	case changed && mode == tenant.ModeHealthy:
		r.log.Info().Str("mode", string(mode)).Msg("tenant sync state changed")
	case changed:
		r.log.Warn().Str("mode", string(mode)).Str("reason", reason).Time("until", h.Until).Msg("tenant sync state changed")
	case remind:
		r.log.Warn().Str("mode", string(mode)).Str("reason", reason).Time("since", h.Since).Msg("tenant still not syncing")
	}
	r.svc.Metrics.tenantMode(r.tenant, mode)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.svc.Health.Put(ctx, h); err != nil {
		r.log.Warn().Err(err).Msg("recording tenant health failed")
	}
}

// callFailed counts a transient failure and opens the breaker at the
// threshold, with a cooldown that doubles while failures go on.
func (r *runner) callFailed(reason string) {
	r.br.mu.Lock()
	r.br.failures++
	n := r.br.failures
	r.br.mu.Unlock()
	if n < r.svc.Cfg.BreakerThreshold {
		return
	}
	cool := r.svc.Cfg.BreakerCooldown << min(n-r.svc.Cfg.BreakerThreshold, 10)
	r.setMode(tenant.ModeBackoff, "Salesforce keeps failing: "+reason, min(cool, r.svc.Cfg.BackoffMax))
}

func (r *runner) callSucceeded() {
	r.br.mu.Lock()
	mode := r.br.health.Mode
	r.br.failures = 0
	r.br.mu.Unlock()
	if mode != tenant.ModeHealthy && mode != "" {
		r.setMode(tenant.ModeHealthy, "", 0)
	}
}

func (s *Service) settings(t string) tenant.Settings {
	if s.Settings == nil {
		return tenant.Default(t)
	}
	return s.Settings.Get(t)
}

// backoff is the redelivery delay after the n-th failed delivery: the
// cenkalti/backoff exponential policy (doubling, ±50% jitter so retries of a
// burst spread out, capped at BackoffMax), evaluated at attempt n because the
// attempt count lives in JetStream's delivery metadata, not in this process.
func (s *Service) backoff(n uint64) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.Cfg.BackoffInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         s.Cfg.BackoffMax,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := uint64(1); i < min(n, 32); i++ {
		d = b.NextBackOff()
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
