// Package app wires the pusher's dependencies from its configuration.
package app

import (
	"context"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/process"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Config is everything the pusher reads from its environment.
type Config struct {
	NATS           natsx.ConnConfig
	Topology       natsx.Topology
	Push           push.Config
	AdminAddr      string
	CredentialsDir string
	// SFEndpoints is where Salesforce credentials may go (issue 20).
	SFEndpoints salesforce.EndpointPolicy
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
		Pprof:          l.Bool("OPTOUT_ADMIN_PPROF", false, "true serves Go profiles (net/http/pprof) under /debug/pprof/ on the admin port (make bench-pusher profiles the pusher this way)"),
		CredentialsDir: l.String("OPTOUT_SF_CREDENTIALS_DIR", "/etc/optout/salesforce", "one Secret per tenant mounted at <dir>/<tenant>/: token_url (My Domain URL), client_id, client_secret or username + jwt_key.pem, optional api_version; else the SF_<TENANT>_* variables. Never read from KV, never logged; re-read every 30s, so a rotated Secret applies without a restart"),
		SFEndpoints:    sfcreds.PolicyFromEnv(l),
	}
	c.Push = push.Config{
		Workers:           l.Int("OPTOUT_WORKERS", d.Workers, 1, 256, "concurrent Salesforce calls per replica (calls wait on Salesforce, not CPU: sized so a slow tenant's calls never starve a thousand others)"),
		BatchSize:         l.Int("OPTOUT_BATCH_SIZE", d.BatchSize, 1, 200, "records per sObject Collections call"),
		Linger:            l.Duration("OPTOUT_LINGER", d.Linger, 0, 5*time.Second, "the most a batch waits for company after its first person, and only while more of the tenant's events are being folded or arriving in a burst (a lone opt-out goes at once)"),
		RetryHorizon:      l.Duration("OPTOUT_RETRY_HORIZON", d.RetryHorizon, time.Minute, 30*24*time.Hour, "how long a person's write is retried, from its first failure (a held tenant's wait does not count), before its deciding event goes to the DLQ (metric optout_retry_horizon_exceeded: alert on any)"),
		BackoffInitial:    l.Duration("OPTOUT_BACKOFF_INITIAL", d.BackoffInitial, time.Millisecond, time.Hour, "first retry delay (doubles, ±50% jitter)"),
		BackoffMax:        l.Duration("OPTOUT_BACKOFF_MAX", d.BackoffMax, time.Millisecond, 24*time.Hour, "largest retry delay"),
		BreakerThreshold:  l.Int("OPTOUT_BREAKER_THRESHOLD", d.BreakerThreshold, 1, 1000, "consecutive failed calls that open a tenant's breaker (it stops pushing for a while)"),
		BreakerCooldown:   l.Duration("OPTOUT_BREAKER_COOLDOWN", d.BreakerCooldown, time.Millisecond, time.Hour, "first pause of an open breaker (doubles while failures go on, up to OPTOUT_BACKOFF_MAX)"),
		QuotaPause:        l.Duration("OPTOUT_QUOTA_PAUSE", d.QuotaPause, time.Millisecond, 24*time.Hour, "wait before probing a tenant whose API allowance is spent"),
		HealthRecheck:     l.Duration("OPTOUT_HEALTH_RECHECK", d.HealthRecheck, time.Millisecond, 24*time.Hour, "how often an unhealthy tenant's setup is rechecked"),
		UnhealthyReminder: l.Duration("OPTOUT_UNHEALTHY_REMINDER", d.UnhealthyReminder, time.Second, 24*time.Hour, "a tenant's sync state is logged when it changes; while it stays unhealthy, paused or backing off, a reminder is logged this often"),
		DiscoveryInterval: l.Duration("OPTOUT_DISCOVERY_INTERVAL", d.DiscoveryInterval, 10*time.Millisecond, time.Hour, "how often the events stream and the settings are scanned for tenants without a runner yet"),
		TenantConcurrency: l.Int("OPTOUT_TENANT_CONCURRENCY", d.TenantConcurrency, 1, 64, "one tenant's Salesforce calls in flight per replica, so slow tenants cannot take every worker"),
		SweepInterval:     l.Duration("OPTOUT_SWEEP_INTERVAL", d.SweepInterval, 10*time.Millisecond, time.Hour, "how often the ledger's dirty set is swept into the push queues (persons another replica ingested, or held before a restart)"),
		ResyncInterval:    l.Duration("OPTOUT_RESYNC_INTERVAL", d.ResyncInterval, time.Second, 7*24*time.Hour, "how often the whole ledger is scanned for dirty persons (the controller's resync)"),
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
	creds := sfcreds.Source{Dir: cfg.CredentialsDir, Policy: cfg.SFEndpoints}
	if w := cfg.SFEndpoints.Warning(); w != "" {
		log.Warn().Msg(w)
	}
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
		Clients:  &sfcreds.Pool{Source: creds},
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
