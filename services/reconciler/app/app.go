// Package app wires the reconciler's dependencies from its configuration.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/cdc"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/services/reconciler/sfread"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/pubsub"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/process"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// Config is everything the reconciler reads from its environment.
type Config struct {
	NATS           natsx.ConnConfig
	Topology       natsx.Topology
	Redis          *redis.Options
	LockPrefix     string
	LeaseTTL       time.Duration
	AdminAddr      string
	CredentialsDir string
	SFEndpoints    salesforce.EndpointPolicy // where Salesforce credentials may go
	Replica        string
	Tick           time.Duration
	MaxConcurrent  int
	Engine         engine.Config
	CDC            cdc.Config
}

// Load reads the configuration; check l.Err() (or call l.Exit) afterwards.
func Load(l *config.Loader) Config {
	d := engine.DefaultConfig()
	c := Config{
		NATS:     natsx.ConnConfigFromEnv(l, "optout-reconciler"),
		Topology: natsx.TopologyFromEnv(l),
	}
	redisURL := l.String("OPTOUT_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for the per-tenant lease locks (redis:// or rediss://, with user:password@ when needed; never logged)")
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		// Parse errors can quote the URL, password included.
		reason := err.Error()
		if strings.Contains(reason, "@") || strings.Contains(reason, "://") {
			reason = "malformed URL"
		}
		l.Invalid("OPTOUT_REDIS_URL", "(not shown: may hold a password)", "want redis://[user:password@]host:port/db or rediss://...: "+reason)
	}
	c.Redis = opts
	defPrefix := "optout:reconcile:"
	if c.Topology.Namespace != "" {
		defPrefix = "optout:" + c.Topology.Namespace + ":reconcile:"
	}
	c.LockPrefix = l.String("OPTOUT_LOCK_PREFIX", defPrefix, "prefix of the lease and fence keys in Redis (optout:<namespace>:reconcile: with OPTOUT_NAMESPACE)")
	c.LeaseTTL = l.Duration("OPTOUT_LEASE_TTL", time.Minute, time.Second, time.Hour, "lease length (at least 3s); a crashed replica's run is resumed after at most this long (renewed every third)")
	c.AdminAddr = l.HostPort("OPTOUT_ADMIN_ADDR", ":9090", "admin listener: /metrics, /healthz, /readyz (ready when NATS and Redis answer)")
	c.CredentialsDir = l.String("OPTOUT_SF_CREDENTIALS_DIR", "/etc/optout/salesforce", "tenants' Salesforce credentials, as for the pusher (<dir>/<tenant>/… or the SF_<TENANT>_* variables)")
	c.SFEndpoints = sfcreds.PolicyFromEnv(l)
	c.Replica = l.Computed("OPTOUT_REPLICA_ID", func() string {
		host, _ := os.Hostname()
		return host + "-" + randomSuffix()
	}, "hostname-<random>", "this replica's name in run reports and fence records")
	c.Tick = l.Duration("OPTOUT_RECONCILE_TICK", 30*time.Second, time.Second, time.Hour, "how often due schedule slots and interrupted runs are looked for")
	c.MaxConcurrent = l.Int("OPTOUT_RECONCILE_MAX_CONCURRENT", 2, 1, 64, "scheduled runs at once on this replica (the rest go to other replicas; manual runs are not counted)")

	e := d
	e.Read.Mode = sfread.Mode(l.String("OPTOUT_RECONCILE_READ_MODE", string(d.Read.Mode), "how the opted-out set is read", string(sfread.Auto), string(sfread.SOQL), string(sfread.Bulk)))
	e.Read.BulkThreshold = l.Int("OPTOUT_RECONCILE_BULK_THRESHOLD", d.Read.BulkThreshold, 0, 100_000_000, "auto mode: objects with more opted-out records than this are read with Bulk API 2.0")
	e.Read.PageSize = l.Int("OPTOUT_RECONCILE_PAGE_SIZE", d.Read.PageSize, 200, 2000, "SOQL batch size asked for")
	e.Read.BulkMaxRecords = l.Int("OPTOUT_RECONCILE_BULK_PAGE_ROWS", d.Read.BulkMaxRecords, 1000, 10_000_000, "rows per Bulk API 2.0 results page")
	e.Read.BulkPollInitial = l.Duration("OPTOUT_RECONCILE_BULK_POLL", d.Read.BulkPollInitial, time.Millisecond, time.Minute, "first wait between Bulk job polls (doubles up to 30s)")
	e.APIShare = l.Float("OPTOUT_RECONCILE_API_SHARE", d.APIShare, 0.001, 1, "share of the org's remaining daily API allowance one run may spend")
	e.APIBudgetFallback = int64(l.Int("OPTOUT_RECONCILE_API_BUDGET_FALLBACK", int(d.APIBudgetFallback), 1, 10_000_000, "run budget when the org's allowance cannot be read"))
	e.ResubscribeShare = l.Float("OPTOUT_RECONCILE_RESUBSCRIBE_SHARE", d.ResubscribeShare, 0, 1, "mass-resubscribe guard: stop when a run would apply more resubscribes than this share of the opt-outs")
	e.ResubscribeMin = int64(l.Int("OPTOUT_RECONCILE_RESUBSCRIBE_MIN", int(d.ResubscribeMin), 0, 1_000_000_000, "mass-resubscribe guard: never stop for this many or fewer"))
	e.LedgerWorkers = l.Int("OPTOUT_RECONCILE_LEDGER_WORKERS", d.LedgerWorkers, 1, 256, "concurrent ledger writes of a run")
	e.LedgerBatch = l.Int("OPTOUT_RECONCILE_LEDGER_BATCH", d.LedgerBatch, 1, 10000, "ledger changes between checkpoints")
	e.WriteBatch = l.Int("OPTOUT_RECONCILE_WRITE_BATCH", d.WriteBatch, 1, 200, "records per sObject Collections call")
	e.MaxFailures = l.Int("OPTOUT_RECONCILE_MAX_FAILURES", d.MaxFailures, 1, 100, "transient failures in a row after which a run is given up (failed)")
	e.RetryBackoff = l.Duration("OPTOUT_RECONCILE_RETRY_BACKOFF", d.RetryBackoff, time.Second, 24*time.Hour, "first wait before resuming a run after a transient failure (doubles, up to 32×)")
	e.FullEvery = l.Duration("OPTOUT_RECONCILE_FULL_EVERY", d.FullEvery, 0, 365*24*time.Hour, "a run reads only what changed since the last complete run unless its last full scan is this old (0: every run is full); a full scan also runs on request (reconcile run --full) and after a CDC overflow or lost position")
	e.Overlap = l.Duration("OPTOUT_RECONCILE_OVERLAP", d.Overlap, 0, 24*time.Hour, "an incremental run reads the Salesforce records whose SystemModstamp is after the last complete run's mark less this (a transaction stamped before the mark may commit after it)")
	c.Engine = e

	dc := cdc.DefaultConfig()
	dc.PubSub.Addr = l.HostPort("OPTOUT_PUBSUB_ADDR", pubsub.DefaultAddr, "Salesforce's Pub/Sub API (Change Data Capture) for tenants with cdcEnabled; api.deu.pubsub.salesforce.com:7443 for orgs processed in Germany")
	dc.PubSub.Plaintext = l.Bool("OPTOUT_PUBSUB_PLAINTEXT", false, "dial the Pub/Sub API without TLS: only to loopback (the sandbox) or a host in OPTOUT_SF_INSECURE_HTTP_HOSTS")
	dc.Watchdog = l.Duration("OPTOUT_CDC_WATCHDOG", dc.Watchdog, time.Second, time.Hour, "a CDC stream that sends nothing (no event, no keepalive) for this long is resubscribed and a reconcile requested (keepalives come within 270s)")
	dc.Retry = l.Duration("OPTOUT_CDC_RETRY", dc.Retry, time.Second, 24*time.Hour, "how long a tenant whose CDC fell back to the nightly run (not enabled, allocation spent) waits before trying again")
	dc.Allocation = int64(l.Int("OPTOUT_CDC_ALLOCATION", int(dc.Allocation), 1, 100_000_000, "the org's delivered-event allocation per 24 h when GET /limits does not say (Enterprise 25000, Performance and Unlimited 50000)"))
	dc.Tick = c.Tick
	c.CDC = dc
	if c.LeaseTTL < 3*time.Second {
		l.Invalid("OPTOUT_LEASE_TTL", c.LeaseTTL.String(), "want at least 3s: renewals every third of it need room")
	}
	return c
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// App is a wired reconciler replica.
type App struct {
	*process.Process
	Service *service.Service
	CDC     *cdc.Subscriber
}

// New connects, provisions and wires everything; Run then reconciles.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (_ *App, err error) {
	p, err := process.Start(ctx, "optout-reconciler", cfg.NATS, cfg.Topology, cfg.AdminAddr, log)
	if err != nil {
		return nil, err
	}
	a := &App{Process: p}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	tel, nc, prov, settings := p.Tel, p.NC, p.Prov, p.Settings
	rdb := redis.NewClient(cfg.Redis)
	a.OnClose(func() { _ = rdb.Close() })
	locker, err := lock.New(rdb, lock.Options{Prefix: cfg.LockPrefix, TTL: cfg.LeaseTTL})
	if err != nil {
		return nil, err
	}
	metrics, err := engine.NewMetrics(tel.MeterProvider)
	if err != nil {
		return nil, err
	}
	store := runs.Store{KV: prov.Runs}
	if last, err := store.ListLastSuccess(ctx); err == nil {
		for t, l := range last {
			metrics.LastSuccess(ctx, t, float64(l.FinishedAt.UnixMilli())/1000)
		}
	}
	a.Admin.AddCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })

	if w := cfg.SFEndpoints.Warning(); w != "" {
		log.Warn().Msg(w)
	}
	clients := &sfcreds.Pool{
		Source: sfcreds.Source{Dir: cfg.CredentialsDir, Policy: cfg.SFEndpoints},
		// Every request of a run is counted against its API budget.
		Configure: func(c *salesforce.Config) { c.Transport = budget.Transport{Next: http.DefaultTransport} },
	}
	lg, err := ledger.New(ctx, prov)
	if err != nil {
		return nil, err
	}
	eng := &engine.Engine{
		Cfg:       cfg.Engine,
		Ledger:    lg,
		Runs:      store,
		Publisher: natsx.Publisher{JS: prov.JS, Topology: cfg.Topology},
		Topology:  cfg.Topology,
		Clients:   clients,
		Tracer:    tel.Tracer("github.com/optout-sync/optout-sync/services/reconciler"),
		Metrics:   metrics,
		Log:       log,
		Holder:    cfg.Replica,
	}
	a.Service = &service.Service{
		Engine: eng, Locker: locker, Runs: store, Settings: settings, NC: nc, Topology: cfg.Topology,
		Replica: cfg.Replica, Log: log, Tick: cfg.Tick, MaxConcurrent: cfg.MaxConcurrent,
	}
	cdcMetrics, err := cdc.NewMetrics(tel.MeterProvider)
	if err != nil {
		return nil, err
	}
	a.CDC = &cdc.Subscriber{
		Cfg: cfg.CDC, Engine: eng, Locker: locker, Runs: store, Settings: settings, Clients: clients,
		NC: nc, Topology: cfg.Topology, Replica: cfg.Replica, Log: log, Metrics: cdcMetrics,
	}
	log.Info().Str("traces", tel.TracesExport).Str("admin", cfg.AdminAddr).Str("replica", cfg.Replica).
		Dur("lease_ttl", cfg.LeaseTTL).Msg("reconciler started")
	return a, nil
}

// Run serves the admin port, reconciles and streams the CDC tenants until
// ctx ends and the runs and streams in flight have stopped.
func (a *App) Run(ctx context.Context) error {
	if err := a.Admin.Start(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.CDC.Run(ctx) }()
	err := a.Service.Run(ctx)
	cancel() // the service stopping ends the streams too
	return errors.Join(err, <-done)
}
