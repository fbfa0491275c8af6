// Package app wires the pusher's dependencies from its configuration.
package app

import (
	"context"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/shared/config"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/process"
	"github.com/optout-sync/optout-sync/shared/sfcreds"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// Config is everything the pusher reads from its environment.
type Config struct {
	NATS           natsx.ConnConfig
	Topology       natsx.Topology
	Push           push.Config
	AdminAddr      string
	CredentialsDir string
	// Pprof mounts net/http/pprof under /debug/pprof/ on the admin port.
	Pprof bool
}

// Load reads the configuration; check l.Err() afterwards.
func Load(l *config.Loader) Config {
	d := push.DefaultConfig()
	c := Config{
		NATS:           natsx.ConnConfigFromEnv(l, "optout-pusher"),
		Topology:       natsx.TopologyFromEnv(l),
		AdminAddr:      l.HostPort("OPTOUT_ADMIN_ADDR", ":9090", "admin listener: /metrics, /healthz, /readyz"),
		Pprof:          l.Bool("OPTOUT_ADMIN_PPROF", false, "serve Go profiles (net/http/pprof) under /debug/pprof/ on the admin port"),
		CredentialsDir: l.String("OPTOUT_SF_CREDENTIALS_DIR", "/etc/optout/salesforce", "directory with one Secret per tenant: <dir>/<tenant>/{token_url,client_id,client_secret,...}"),
	}
	c.Push = push.Config{
		Workers:           l.Int("OPTOUT_WORKERS", d.Workers, 1, 256, "concurrent Salesforce calls per replica"),
		BatchSize:         l.Int("OPTOUT_BATCH_SIZE", d.BatchSize, 1, 200, "records per sObject Collections call"),
		Linger:            l.Duration("OPTOUT_LINGER", d.Linger, 0, 5*time.Second, "the most a batch waits for more events after its first, while more of the tenant's are on their way"),
		RetryHorizon:      l.Duration("OPTOUT_RETRY_HORIZON", d.RetryHorizon, time.Minute, 30*24*time.Hour, "how long a transiently failing event is retried before the DLQ"),
		BackoffInitial:    l.Duration("OPTOUT_BACKOFF_INITIAL", d.BackoffInitial, time.Millisecond, time.Hour, "first redelivery delay"),
		BackoffMax:        l.Duration("OPTOUT_BACKOFF_MAX", d.BackoffMax, time.Millisecond, 24*time.Hour, "largest redelivery delay"),
		BreakerThreshold:  l.Int("OPTOUT_BREAKER_THRESHOLD", d.BreakerThreshold, 1, 1000, "consecutive failed calls that pause a tenant"),
		BreakerCooldown:   l.Duration("OPTOUT_BREAKER_COOLDOWN", d.BreakerCooldown, time.Millisecond, time.Hour, "first pause of an open breaker (doubles)"),
		QuotaPause:        l.Duration("OPTOUT_QUOTA_PAUSE", d.QuotaPause, time.Millisecond, 24*time.Hour, "wait before probing a tenant whose API allowance is spent"),
		HealthRecheck:     l.Duration("OPTOUT_HEALTH_RECHECK", d.HealthRecheck, time.Millisecond, 24*time.Hour, "how often an unhealthy tenant's setup is rechecked"),
		UnhealthyReminder: l.Duration("OPTOUT_UNHEALTHY_REMINDER", d.UnhealthyReminder, time.Second, 24*time.Hour, "how often a tenant that stays out of sync is logged again"),
		DiscoveryInterval: l.Duration("OPTOUT_DISCOVERY_INTERVAL", d.DiscoveryInterval, 10*time.Millisecond, time.Hour, "how often new tenants are looked for"),
		TenantConcurrency: l.Int("OPTOUT_TENANT_CONCURRENCY", d.TenantConcurrency, 1, 64, "one tenant's Salesforce calls in flight per replica"),
		SweepInterval:     l.Duration("OPTOUT_SWEEP_INTERVAL", d.SweepInterval, 10*time.Millisecond, time.Hour, "how often the ledger's dirty set is swept into the push queues"),
		ResyncInterval:    l.Duration("OPTOUT_RESYNC_INTERVAL", d.ResyncInterval, time.Second, 7*24*time.Hour, "how often the whole ledger is scanned for dirty persons"),
	}
	return c
}

// App is a wired pusher replica.
type App struct {
	*process.Process
	Service *push.Service
}

// New connects, provisions and wires everything; Run then pushes.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (*App, error) {
	p, err := process.Start(ctx, "optout-pusher", cfg.NATS, cfg.Topology, cfg.AdminAddr, log)
	if err != nil {
		return nil, err
	}
	metrics, err := push.NewMetrics(p.Tel.MeterProvider)
	if err != nil {
		p.Close()
		return nil, err
	}
	prov := p.Prov
	if cfg.Pprof {
		// Off by default: a profile costs CPU and shows internals; the
		// admin port is internal, but turning it on is a deliberate act.
		p.Admin.HandleFunc("GET /debug/pprof/", pprof.Index)
		p.Admin.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		p.Admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		p.Admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		p.Admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	lg, err := ledger.New(ctx, prov)
	if err != nil {
		p.Close()
		return nil, err
	}
	svc := &push.Service{
		Cfg:      cfg.Push,
		JS:       prov.JS,
		Topology: cfg.Topology,
		Ledger:   lg,
		Settings: p.Settings,
		Clients:  &sfcreds.Pool{Source: sfcreds.Source{Dir: cfg.CredentialsDir}},
		Health:   tenant.HealthStore{KV: prov.Health},
		Log:      log,
		Metrics:  metrics,
	}
	log.Info().Str("traces", p.Tel.TracesExport).Str("admin", cfg.AdminAddr).Int("workers", cfg.Push.Workers).Msg("pusher started")
	return &App{Process: p, Service: svc}, nil
}

// Run serves the admin port and pushes until ctx ends and in-flight batches
// are settled.
func (a *App) Run(ctx context.Context) error {
	if err := a.Admin.Start(ctx); err != nil {
		return err
	}
	return a.Service.Run(ctx)
}
