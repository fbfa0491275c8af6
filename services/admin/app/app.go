// Package app wires the admin service: the tenant settings page under
// /admin/ on its admin port, beside /metrics, /healthz and /readyz.
package app

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/admin/compliance"
	"github.com/optout-sync/optout-sync/services/admin/ledgerfeed"
	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/services/admin/page/chartspanel"
	"github.com/optout-sync/optout-sync/services/admin/page/runspanel"
	"github.com/optout-sync/optout-sync/services/admin/suppression"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/process"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Config is everything the admin service reads from its environment.
type Config struct {
	NATS      natsx.ConnConfig
	Topology  natsx.Topology
	AdminAddr string
	Auth      page.Auth
	// CredentialsDir holds the tenants' Salesforce Secrets, read only for
	// the page's live prerequisite check.
	CredentialsDir string
	// SFEndpoints is where Salesforce credentials may go (issue 20): the
	// page's prerequisite check calls Salesforce like the services do.
	SFEndpoints salesforce.EndpointPolicy
	// Suppression is the "may I email this address?" API's.
	Suppression suppression.Config
	// JaegerURL is the Jaeger UI the page links runs' traces to ("": none).
	JaegerURL string
}

// Load reads the configuration; check l.Err() afterwards.
func Load(l *config.Loader) Config {
	return Config{
		NATS:           natsx.ConnConfigFromEnv(l, "optout-admin"),
		Topology:       natsx.TopologyFromEnv(l),
		AdminAddr:      l.HostPort("OPTOUT_ADMIN_ADDR", ":9090", "listener of the settings page under /admin/, and /metrics, /healthz, /readyz"),
		Auth:           page.AuthFromEnv(l),
		CredentialsDir: l.String("OPTOUT_SF_CREDENTIALS_DIR", "/etc/optout/salesforce", "directory with one Secret per tenant: <dir>/<tenant>/{token_url,client_id,client_secret,...}"),
		SFEndpoints:    sfcreds.PolicyFromEnv(l),
		Suppression:    suppression.ConfigFromEnv(l),
		JaegerURL:      l.String("OPTOUT_JAEGER_URL", "", "base URL of the Jaeger UI operators open (e.g. https://jaeger.example.com); the admin page links each nightly run to its trace there. Unset: no links"),
	}
}

// App is a wired admin service replica.
type App struct {
	*process.Process
	listening bool
	// Suppression serves GET /v1/tenants/{tenant}/suppression from an
	// index of the ledger it keeps in memory while Run runs.
	Suppression *suppression.API
	// Compliance is the compliance clock, kept from the ledger while Run
	// runs: on the tenant page and in the metrics.
	Compliance *compliance.Tracker
	// Ledger is the one reader of the whole ledger feeding both (and the
	// readiness check "ledger": ready once it has read every entry).
	Ledger *ledgerfeed.Feed
}

// New connects, provisions and mounts the page; Run then serves it.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (*App, error) {
	p, err := process.Start(ctx, "optout-admin", cfg.NATS, cfg.Topology, cfg.AdminAddr, log)
	if err != nil {
		return nil, err
	}
	prov := p.Prov
	if w := cfg.SFEndpoints.Warning(); w != "" {
		log.Warn().Msg(w)
	}
	led, err := ledger.New(ctx, prov)
	if err != nil {
		p.Close()
		return nil, err
	}
	trail := proof.Source{Ledger: led, JS: prov.JS, Topology: cfg.Topology}
	clock := compliance.NewTracker(log)
	if err := clock.Register(p.Tel.MeterProvider); err != nil {
		p.Close()
		return nil, fmt.Errorf("compliance clock metrics: %w", err)
	}
	// Without credentials the page answers 503 with setup instructions; the
	// probes stay open either way.
	p.Admin.Handle("/admin/", page.New(page.Deps{
		Status: &tenantstatus.Inspector{JS: prov.JS, Topology: cfg.Topology,
			Settings: tenant.Store{KV: prov.Tenants}, Health: tenant.HealthStore{KV: prov.Health},
			Salesforce: tenantstatus.SourceClients{Source: sfcreds.Source{Dir: cfg.CredentialsDir, Policy: cfg.SFEndpoints}}},
		Panels: []page.Panel{
			compliance.Panel{Tracker: clock},
			chartspanel.Panel{Proof: trail, Runs: runs.Store{KV: prov.Runs}},
			runspanel.Panel{Runs: runs.Store{KV: prov.Runs}, Settings: tenant.Store{KV: prov.Tenants}, JaegerURL: cfg.JaegerURL},
		},
		Proof: &trail,
		DLQ:   &deadletter.DLQ{JS: prov.JS, Topology: cfg.Topology},
		Reconcile: func(ctx context.Context, t string, req runs.ControlRequest) (runs.ControlReply, error) {
			return runs.Request(ctx, p.NC, cfg.Topology, t, req)
		},
		Auth: cfg.Auth, Log: log}))
	api := suppression.New(cfg.Suppression, log)
	if err := api.Register(p.Tel.MeterProvider); err != nil {
		p.Close()
		return nil, fmt.Errorf("suppression metrics: %w", err)
	}
	p.Admin.Handle(suppression.Pattern, api)
	sinks := []ledgerfeed.Sink{clock}
	if api.Enabled() {
		sinks = append(sinks, api.Index())
	} else {
		log.Info().Msg("suppression API off (OPTOUT_SUPPRESSION_TOKENS_FILE unset): no index of the ledger is kept")
	}
	feed := ledgerfeed.New(led, log, sinks...)
	// Not ready until the ledger is read: before, the API could only answer
	// "unknown" and the compliance clock is not known.
	p.Admin.AddCheck("ledger", feed.Check)
	log.Info().Str("admin", cfg.AdminAddr).Msg("admin service started")
	return &App{Process: p, Suppression: api, Compliance: clock, Ledger: feed}, nil
}

// Listen binds the port and serves until ctx ends; after it Admin.Addr()
// is the bound address (a caller that prints the page's URL needs it
// before Run). Run calls it when nobody did.
func (a *App) Listen(ctx context.Context) error {
	if err := a.Admin.Start(ctx); err != nil {
		return err
	}
	a.listening = true
	return nil
}

// Run serves the page until ctx ends, then lets requests in flight finish.
func (a *App) Run(ctx context.Context) error {
	if !a.listening {
		if err := a.Listen(ctx); err != nil {
			return err
		}
	}
	_ = a.Ledger.Run(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return a.Admin.Shutdown(sctx)
}
