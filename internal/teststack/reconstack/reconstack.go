// Package reconstack runs real reconciler replicas (an engine, or the whole
// service around it) on a teststack.Stack, for the reconciler's tests
// (through its recontest) and optoutctl's. It is apart from teststack
// because it imports the reconciler: the pusher's tests use the stack
// without reaching another service. Every replica needs Redis as well as
// NATS; New skips the test under -short.
package reconstack

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Config is the engine tuned for tests: short polls and backoffs.
func Config() engine.Config {
	c := engine.DefaultConfig()
	c.Read.BulkPollInitial, c.Read.BulkPollMax = 5*time.Millisecond, 50*time.Millisecond
	c.WriteBackoff, c.RetryBackoff = 5*time.Millisecond, 20*time.Millisecond
	c.LedgerWorkers = 4
	return c
}

// Stack is the test stack with what one test's reconciler replicas share,
// as the replicas of a deployment do: the Redis key prefix of their leases,
// the run store, a settings cache and telemetry.
type Stack struct {
	*teststack.Stack
	// Prefix is the test's Redis key prefix (its keys are deleted at the
	// test's end).
	Prefix string
	// Store keeps the run reports, checkpoints and fences.
	Store runs.Store
	// Cache is the replicas' view of the tenant settings: a test waits on
	// it to know a change has reached them (WaitSettings).
	Cache *tenant.Cache
	// Tel records the replicas' spans and metrics in memory.
	Tel *telemetry.TestProviders
	// tb is the test, for locktest (the stack's T may be a program's).
	tb testing.TB
}

// New adds the replicas' shared parts to st. Under -short it skips the test
// (locktest): replicas need Redis.
func New(t testing.TB, st *teststack.Stack) *Stack {
	t.Helper()
	prefix := locktest.Prefix(t)
	tel := telemetry.NewForTest()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return &Stack{
		Stack: st, Prefix: prefix, Store: runs.Store{KV: st.Prov.Runs}, Cache: st.WatchSettings(), Tel: tel, tb: t,
	}
}

// Options shape one replica; the zero value is a replica named "" with a
// 5 s lease, on its own Redis connection and the real clock.
type Options struct {
	// Name is the replica's: its lease holder, the client its Salesforce
	// calls are logged under by the sandbox, the "replica" of its logs.
	Name       string
	TTL, Renew time.Duration // of its lease (default TTL 5 s)
	// RDB is its Redis connection (default a new one): a test breaks one
	// replica's connection without touching the others'.
	RDB   *redis.Client
	Now   func() time.Time // its clock (nil: the real one)
	Hooks engine.Hooks
	// Cfg changes its engine's configuration (Config by default).
	Cfg func(*engine.Config)
	// ErrorsOnly logs errors only (default: warnings and up), to the
	// test's log.
	ErrorsOnly bool
	// Tick is how often the service looks for due schedules (default a
	// minute); MaxConcurrent bounds its scheduled runs (0: the default).
	Tick          time.Duration
	MaxConcurrent int
}

// Log is a replica's test logger.
func (s *Stack) Log(o Options) zerolog.Logger {
	level := zerolog.WarnLevel
	if o.ErrorsOnly {
		level = zerolog.ErrorLevel
	}
	return zerolog.New(zerolog.NewTestWriter(s.T)).Level(level).With().Str("replica", o.Name).Logger()
}

// Locker builds a replica's lease locker under the test's prefix.
func (s *Stack) Locker(o Options) *lock.Locker {
	s.T.Helper()
	if o.TTL == 0 {
		o.TTL = 5 * time.Second
	}
	rdb := o.RDB
	if rdb == nil {
		rdb = locktest.Client(s.tb)
	}
	locker, err := lock.New(rdb, lock.Options{Prefix: s.Prefix, TTL: o.TTL, RenewEvery: o.Renew})
	if err != nil {
		s.T.Fatal(err)
	}
	return locker
}

// Engine builds a replica's engine with its own Salesforce clients, whose
// every request is counted against the run's API budget, as in production.
func (s *Stack) Engine(o Options) *engine.Engine {
	s.T.Helper()
	cfg := Config()
	if o.Cfg != nil {
		o.Cfg(&cfg)
	}
	metrics, err := engine.NewMetrics(s.Tel.MeterProvider)
	if err != nil {
		s.T.Fatal(err)
	}
	pool := &sfcreds.Pool{
		Source: s.SFSource(),
		// Credentials do not change under a replica in these tests.
		Refresh: time.Hour,
		Configure: func(c *salesforce.Config) {
			c.Transport = budget.Transport{}
			c.CallClient = o.Name
			c.TracerProvider = s.Tel.TracerProvider
		},
	}
	return &engine.Engine{
		Cfg: cfg, Ledger: s.Ledger, Runs: s.Store,
		Publisher: natsx.Publisher{JS: s.Prov.JS, Topology: s.Topo}, Topology: s.Topo,
		Clients: pool, Tracer: s.Tel.Tracer("reconciler-test"), Metrics: metrics, Log: s.Log(o),
		Holder: o.Name, Now: o.Now, Hooks: o.Hooks,
	}
}

// Service builds a whole replica (lease loop, schedule, control requests)
// around its engine, not yet running.
func (s *Stack) Service(o Options) *service.Service {
	s.T.Helper()
	if o.Tick == 0 {
		o.Tick = time.Minute
	}
	return &service.Service{
		Engine: s.Engine(o), Locker: s.Locker(o), Runs: s.Store, Settings: s.Cache, NC: s.NC, Topology: s.Topo,
		Replica: o.Name, Log: s.Log(o), Now: o.Now, Tick: o.Tick, MaxConcurrent: o.MaxConcurrent,
	}
}

// Run runs svc until the test ends (and waits for it to stop then).
func (s *Stack) Run(svc *service.Service) {
	ctx, cancel := context.WithCancel(s.Ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			s.T.Errorf("reconciler %s: %v", svc.Replica, err)
		}
	}()
	s.T.Cleanup(func() { cancel(); <-done })
}

// Start builds a replica's service and runs it until the test ends.
func (s *Stack) Start(o Options) *service.Service {
	s.T.Helper()
	svc := s.Service(o)
	s.Run(svc)
	return svc
}

// WaitSettings waits until the replicas' cache shows st, so the test goes
// on only once a change it stored has reached them (the deadline only ends
// a test that would otherwise hang).
func (s *Stack) WaitSettings(st tenant.Settings) {
	s.T.Helper()
	s.Eventually("settings of "+st.Tenant+" at the reconciler", 60*time.Second, func() bool { return s.Cache.Get(st.Tenant) == st })
}
