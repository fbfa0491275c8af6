package testkit

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// ReconcilerReplica is the name of the test's reconciler replica.
const ReconcilerReplica = "reconciler-test"

// Runs is the stack's run-report store.
func (s *Stack) Runs() runs.Store { return runs.Store{KV: s.Prov.Runs} }

// StartReconciler runs a real reconciler replica (real Redis leases under a
// per-test prefix) until the test ends. Its schedule ticks hourly; a test
// that enables sync should claim the tenant's slot far ahead (NoSchedule)
// so only the runs it asks for happen. hooks pause runs at named points.
func (s *Stack) StartReconciler(hooks engine.Hooks) *service.Service {
	s.T.Helper()
	locker, err := lock.New(locktest.Client(s.T), lock.Options{Prefix: locktest.Prefix(s.T), TTL: 5 * time.Second})
	if err != nil {
		s.T.Fatal(err)
	}
	cache, err := tenant.Watch(s.Ctx, s.Prov.Tenants)
	if err != nil {
		s.T.Fatal(err)
	}
	s.reconcilerCache = cache
	metrics, err := engine.NewMetrics(noop.NewMeterProvider())
	if err != nil {
		s.T.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Read.BulkPollInitial, cfg.Read.BulkPollMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.WriteBackoff, cfg.RetryBackoff = 5*time.Millisecond, 20*time.Millisecond
	cfg.MaxFailures = 1
	log := zerolog.New(zerolog.NewTestWriter(s.T)).Level(zerolog.ErrorLevel)
	pool := &sfcreds.Pool{Source: s.SFSource(), Refresh: time.Hour,
		Configure: func(c *salesforce.Config) { c.Transport = budget.Transport{} }}
	eng := &engine.Engine{
		Cfg: cfg, Ledger: s.Ledger, Runs: s.Runs(),
		Publisher: natsx.Publisher{JS: s.Prov.JS, Topology: s.Topo}, Topology: s.Topo,
		Clients: pool, Tracer: otel.Tracer("reconciler-test"), Metrics: metrics, Log: log,
		Holder: ReconcilerReplica, Hooks: hooks,
	}
	svc := &service.Service{
		Engine: eng, Locker: locker, Runs: s.Runs(), Settings: cache, NC: s.NC, Topology: s.Topo,
		Replica: ReconcilerReplica, Log: log, Tick: time.Hour,
	}
	ctx, cancel := context.WithCancel(s.Ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			s.T.Errorf("reconciler: %v", err)
		}
	}()
	s.T.Cleanup(func() { cancel(); <-done })
	return svc
}

// EnableSync stores a tenant's settings with sync enabled, claims its
// schedule slots up to 2100 (so the reconciler starts only requested runs)
// and waits until the reconciler (started first) sees the settings.
func (s *Stack) EnableSync(t string) {
	s.T.Helper()
	s.NoSchedule(t)
	st := tenant.Default(t)
	st.SyncEnabled = true
	if err := s.Settings.Put(s.Ctx, st); err != nil {
		s.T.Fatal(err)
	}
	if s.reconcilerCache != nil {
		s.Eventually("settings of "+t+" at the reconciler", func() bool { return s.reconcilerCache.Get(t) == st })
	}
}

// NoSchedule claims the tenant's schedule slots up to 2100.
func (s *Stack) NoSchedule(t string) {
	s.T.Helper()
	if _, err := s.Runs().ClaimSlot(s.Ctx, t, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), "none", "test"); err != nil {
		s.T.Fatal(err)
	}
}

// PutSettings stores a tenant's settings and waits until the running
// reconciler sees them.
func (s *Stack) PutSettings(st tenant.Settings) {
	s.T.Helper()
	if err := s.Settings.Put(s.Ctx, st); err != nil {
		s.T.Fatal(err)
	}
	if s.reconcilerCache != nil {
		s.Eventually("settings of "+st.Tenant+" at the reconciler", func() bool { return s.reconcilerCache.Get(st.Tenant) == st })
	}
}
