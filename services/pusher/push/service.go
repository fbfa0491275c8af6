// Package push writes each opt-out to Salesforce within seconds, level-
// triggered like a Kubernetes controller: the replica reads every tenant's
// events from one shared consumer and folds each into the ledger (package
// shared/flow/ingest); one runner per tenant queues the persons left dirty in a
// coalescing work queue and writes each person's current desired value in
// sObject Collections batches through a shared worker pool. An event that
// left its person dirty stays unacked until a write leaves the person
// clean, or a few seconds, after which the ledger's dirty set takes over
// (package queue); a periodic sweep of that set re-finds what a queue lost (a
// restart, another replica).
package push

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/ingest"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
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
	// off the person (optout.Claim); the call is given up before it ends.
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
		ClaimTTL:          optout.DefaultClaimTTL,
	}
}

// Service is one pusher replica.
type Service struct {
	Cfg      Config
	JS       jetstream.JetStream
	Topology natsx.Topology
	Ledger   *ledger.Ledger
	Settings *tenant.Cache
	Clients  sfwrite.Clients
	Health   tenant.HealthStore
	Log      zerolog.Logger
	Metrics  *Metrics
	Now      func() time.Time

	ingester *ingest.Ingester
	intake   *intake
	slots    chan struct{}
	scans    chan struct{} // runners' catch-up scans at once
	mu       sync.Mutex
	runners  map[string]*runner
	wg       sync.WaitGroup
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
		s.Cfg.ClaimTTL = optout.DefaultClaimTTL
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
	field := func(t string) string { return s.settings(t).TargetField() }
	s.ingester = &ingest.Ingester{Ledger: s.Ledger, Topology: s.Topology, Now: s.Now,
		DLQ: deadletter.DeadLetterer{JS: s.JS, Topology: s.Topology}, Field: field}
	s.intake = &intake{js: s.JS, topo: s.Topology, fold: s.ingester, lanes: s.runnerOf, field: field,
		metrics: s.Metrics, log: s.Log, folds: make(chan struct{}, ingestConcurrency)}
	s.runners = map[string]*runner{}
	defer s.wg.Wait()
	s.wg.Go(func() { s.sweep(ctx) })
	s.wg.Go(func() { s.settleHeld(ctx) })
	s.wg.Go(func() { s.intake.run(ctx) })

	tick := time.NewTicker(s.Cfg.DiscoveryInterval)
	defer tick.Stop()
	var cleaned time.Time
	for {
		if err := s.discover(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Msg("tenant discovery failed; retrying")
		}
		if s.intake.pulling.Load() && time.Since(cleaned) >= legacyCleanupInterval {
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

// checkSetup verifies what an unhealthy tenant needs: credentials that work
// and a writable opt-out field on Contact and Lead.
func (s *Service) checkSetup(ctx context.Context, t string) error {
	client, err := s.Clients.Get(ctx, t)
	if err != nil {
		return err
	}
	return client.CheckOptOutField(ctx, s.settings(t).TargetField())
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
				r.q.Due(ctx, false, r.marker())
			}
		}
	}
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
