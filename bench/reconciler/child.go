package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/sfread"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// runChild runs one reconcile of the bench tenant, wired as a replica
// wires it, and prints the report and its heap peak as JSON.
func runChild() error {
	var heapPeak atomic.Uint64
	stop := make(chan struct{})
	go func() { // sample the heap: the peak the Go runtime had in use
		var ms runtime.MemStats
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > heapPeak.Load() {
				heapPeak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	ctx := context.Background()
	nc, err := nats.Connect(os.Getenv("RB_NATS"), nats.Name("reconbench-child"))
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := natsx.DefaultTopology()
	topo.Namespace = os.Getenv("RB_NAMESPACE")
	topo.Storage = jetstream.MemoryStorage
	topo.Replicas = 1
	prov, err := natsx.Provision(ctx, nc, topo)
	if err != nil {
		return err
	}
	settings, err := tenant.Store{KV: prov.Tenants}.Get(ctx, benchTenant)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("RB_REDIS")})
	defer rdb.Close()
	locker, err := lock.New(rdb, lock.Options{Prefix: lockPrefix(topo.Namespace), TTL: time.Minute})
	if err != nil {
		return err
	}
	store := runs.Store{KV: prov.Runs}
	env := map[string]string{
		"SF_BENCH_TOKEN_URL": os.Getenv("RB_SF_URL"), "SF_BENCH_CLIENT_ID": "bench-id", "SF_BENCH_CLIENT_SECRET": "bench-secret",
	}
	cfg := engine.DefaultConfig()
	cfg.Read.Mode = sfread.Mode(os.Getenv("RB_PATH"))
	cfg.Read.BulkPollInitial = 200 * time.Millisecond
	log := zerolog.New(os.Stderr).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	lg, err := ledger.New(ctx, prov)
	if err != nil {
		return err
	}
	eng := &engine.Engine{
		Cfg: cfg, Ledger: lg,
		Runs: store, Publisher: natsx.Publisher{JS: prov.JS, Topology: topo}, Topology: topo,
		Clients: &sfcreds.Pool{
			Source:    sfcreds.Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }},
			Configure: func(c *salesforce.Config) { c.Transport = budget.Transport{Next: http.DefaultTransport} },
		},
		Log: log, Holder: "reconbench",
	}
	f, err := store.Fence(ctx, benchTenant)
	if err != nil {
		return err
	}
	lease, err := locker.TryAcquire(ctx, benchTenant, lock.MinFence(f.Fence))
	if err != nil {
		return err
	}
	defer func() { _ = lease.Release(context.Background()) }()
	rep, err := eng.Run(lease.Context(), engine.Job{
		Tenant: benchTenant, Settings: settings, Lease: lease, RunID: runs.NewRunID(time.Now()),
		Trigger: runs.Trigger{Kind: runs.TriggerManual, By: "reconbench"},
		// Every path measured is a full scan: the runs before it left a
		// watermark, and the reset between runs (as seeded, no alias
		// index) is not what an incremental run may assume.
		Full: "the benchmark measures the full scan",
	})
	close(stop)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"report": rep, "heapPeak": heapPeak.Load(), "peakRss": vmHWM()})
}

// vmHWM is this process's peak resident set ("VmHWM" in /proc/self/status).
// The child's rusage is no good for that: a vforked child's ru_maxrss
// includes the parent's resident set before exec.
func vmHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
