package clustertest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/schedule"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// fakeClock is the reconcilers' clock: the schedule's slot is reached, and
// an interrupted run's retry time passed, by setting it (never slept on).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// gate holds the first attempt of each tenant's run after it read
// Salesforce, so Redis can die under runs that hold their leases, and
// tells the test when a held run's lease context ended.
type gate struct {
	mu      sync.Mutex
	arrived int
	reached chan struct{}
	lost    chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate() *gate {
	return &gate{reached: make(chan struct{}, 8), lost: make(chan struct{}, 8), release: make(chan struct{})}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) hooks() engine.Hooks {
	return engine.Hooks{At: func(ctx context.Context, point string) {
		if point != "after-read" {
			return
		}
		// Every run passes here once per attempt; the first arrivals are
		// the first attempts of the tenants' runs (resumed attempts come
		// after the gate opened).
		g.mu.Lock()
		g.arrived++
		hold := g.arrived <= len(tenants)
		g.mu.Unlock()
		if !hold {
			return
		}
		g.reached <- struct{}{}
		select {
		case <-ctx.Done(): // the lease is lost
			g.lost <- struct{}{}
		case <-g.release:
		case <-time.After(2 * time.Minute):
		}
		<-g.release
	}}
}

// reconcileAcrossRedisRestart runs the tenants' scheduled reconcile on two
// replicas sharing the test's own Redis, kill -9s Redis while both runs hold
// their leases (after their Salesforce reads), restarts it empty, and
// resumes; each tenant must have exactly one run for the slot, succeeded,
// and no replica may start one while Redis is down. It returns a summary.
func (cl *cluster) reconcileAcrossRedisRestart() string {
	t, ctx := cl.t, cl.ctx
	t.Helper()
	rs := startRedis(t, cl.ps, filepath.Join(cl.dir, "redis"))
	// go-redis logs every failed dial; Redis is down on purpose here.
	redis.SetLogger(quietRedis{})
	store := runs.Store{KV: cl.prov.Runs}
	cache, err := tenant.Watch(ctx, cl.prov.Tenants)
	if err != nil {
		t.Fatal(err)
	}
	st := cache.Get(tenants[0].name)
	clk, err := schedule.Parse(st.ScheduleTime, st.ScheduleZone)
	if err != nil {
		t.Fatal(err)
	}
	slot := clk.Latest(time.Now())
	clock := &fakeClock{t: slot.Add(5 * time.Second)}
	g := newGate()
	defer g.open()

	var replicas []*service.Service
	for _, name := range []string{"reconciler-a", "reconciler-b"} {
		rdb := redis.NewClient(&redis.Options{Addr: rs.addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		t.Cleanup(func() { _ = rdb.Close() })
		// A short lease, so the holder learns within a second that Redis
		// is gone.
		locker, err := lock.New(rdb, lock.Options{Prefix: "optout:reconcile:", TTL: 3 * time.Second, RenewEvery: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cfg := engine.DefaultConfig()
		cfg.Read.BulkPollInitial, cfg.Read.BulkPollMax = 5*time.Millisecond, 50*time.Millisecond
		cfg.WriteBackoff, cfg.RetryBackoff = 5*time.Millisecond, 20*time.Millisecond
		metrics, err := engine.NewMetrics(nil)
		if err != nil {
			t.Fatal(err)
		}
		env := cl.env
		pool := &sfcreds.Pool{
			Source:  sfcreds.Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }},
			Refresh: time.Hour,
			Configure: func(c *salesforce.Config) {
				c.Transport = budget.Transport{}
				c.CallClient = name
			},
		}
		log := cl.log.With().Str("replica", name).Logger()
		eng := &engine.Engine{
			Cfg: cfg, Ledger: cl.lg, Runs: store,
			Publisher: natsx.Publisher{JS: cl.js, Topology: cl.topo}, Topology: cl.topo,
			Clients: pool, Metrics: metrics, Log: log, Holder: name, Now: clock.Now, Hooks: g.hooks(),
		}
		replicas = append(replicas, &service.Service{
			Engine: eng, Locker: locker, Runs: store, Settings: cache, NC: cl.nc, Topology: cl.topo,
			Replica: name, Log: log, Now: clock.Now, Tick: time.Minute,
		})
	}
	pass := func() error {
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for _, r := range replicas {
			wg.Go(func() {
				if err := r.RunDue(ctx); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	bySlot := func(tn string) []runs.Report {
		hist, err := store.History(ctx, tn, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []runs.Report
		for _, r := range hist {
			if r.Trigger.Slot.Equal(slot) {
				out = append(out, r)
			}
		}
		return out
	}

	// Both tenants are due: the replicas share them out and each run stops
	// at the gate holding its lease.
	if err := pass(); err != nil {
		t.Fatalf("first scheduling pass: %v", err)
	}
	for range tenants {
		select {
		case <-g.reached:
		case <-time.After(2 * time.Minute):
			t.Fatal("the scheduled runs never reached the gate")
		}
	}
	firstFence := map[string]uint64{}
	for _, tn := range tenants {
		cp, err := store.Active(ctx, tn.name)
		if err != nil {
			t.Fatalf("%s: no checkpoint of the running run: %v", tn.name, err)
		}
		firstFence[tn.name] = cp.Report.Fence
	}

	rs.Kill()
	for range tenants {
		select {
		case <-g.lost:
		case <-time.After(30 * time.Second):
			t.Fatal("a run kept its lease although Redis is gone")
		}
	}
	// With Redis down no replica can take a lease: a pass must start
	// nothing (and say why).
	clock.Add(2 * time.Minute)
	if err := pass(); err == nil {
		t.Errorf("a scheduling pass with Redis down reported no error")
	}
	if err := rs.restart(ctx); err != nil {
		t.Fatal(err)
	}
	g.open()
	for _, r := range replicas {
		r.Wait()
	}

	// Resume: each pass moves the clock past the retry time of the
	// interrupted runs.
	if err := poll(ctx, 2*time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		clock.Add(2 * time.Minute)
		if err := pass(); err != nil {
			return err
		}
		for _, r := range replicas {
			r.Wait()
		}
		for _, tn := range tenants {
			got := bySlot(tn.name)
			if len(got) == 0 || !got[0].Status.Final() {
				return fmt.Errorf("%s: run of the slot not finished (%d reports)", tn.name, len(got))
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("resuming after the Redis restart: %v", err)
	}
	// More passes in the same slot start nothing.
	for range 2 {
		clock.Add(2 * time.Minute)
		if err := pass(); err != nil {
			t.Fatal(err)
		}
		for _, r := range replicas {
			r.Wait()
		}
	}

	var summary []string
	for _, tn := range tenants {
		got := bySlot(tn.name)
		if len(got) != 1 {
			t.Fatalf("%s: %d runs for the slot %s; want exactly 1", tn.name, len(got), slot)
		}
		r := got[0]
		if r.Status != runs.StatusSucceeded {
			t.Errorf("%s: run %s ended %s (%s)", tn.name, r.RunID, r.Status, r.Reason)
		}
		if r.Attempts < 2 {
			t.Errorf("%s: run %s made %d attempt(s); the Redis restart should have interrupted it", tn.name, r.RunID, r.Attempts)
		}
		if r.Fence <= firstFence[tn.name] {
			t.Errorf("%s: run %s finished under fence %d, not above the %d it held before Redis died", tn.name, r.RunID, r.Fence, firstFence[tn.name])
		}
		c := r.Counts
		if c.SalesConnectOnly+c.SalesforceOnly+c.KnownToSalesforceOnly+c.ResubscribedInSalesforce+c.ClearedBeforeOptOut != 0 || r.Writes.SalesforceWritten != 0 {
			t.Errorf("%s: the reconcile found the drained sides disagreeing: %+v, writes %+v", tn.name, c, r.Writes)
		}
		if _, err := store.Active(ctx, tn.name); !errors.Is(err, runs.ErrNotFound) {
			t.Errorf("%s: a checkpoint is left after the run finished (%v)", tn.name, err)
		}
		published := cl.streamCount(cl.topo.RunsStream(), cl.topo.RunsSubject(tn.name))
		if published != 1 {
			t.Errorf("%s: %d run reports published on %s; want 1", tn.name, published, cl.topo.RunsSubject(tn.name))
		}
		sfw := 0
		for _, c := range cl.sb.Org(tn.name).Calls() {
			if c.Route == sandbox.RouteCollectionsUpdate && strings.HasPrefix(c.Client, "reconciler-") {
				sfw++
			}
		}
		summary = append(summary, fmt.Sprintf("%s: 1 run for slot %s (%s, %d attempts, fence %d→%d, holder %s, %d in both, %d Salesforce writes)",
			tn.name, slot.Format(time.RFC3339), r.Status, r.Attempts, firstFence[tn.name], r.Fence, r.Holder, c.InBoth, sfw))
	}
	t.Logf("reconcile across a Redis restart: %s", strings.Join(summary, "; "))
	return strings.Join(summary, "; ")
}

// streamCount counts the messages of stream on subject.
func (cl *cluster) streamCount(stream, subject string) uint64 {
	s, err := cl.js.Stream(cl.ctx, stream)
	if err != nil {
		cl.t.Fatal(err)
	}
	info, err := s.Info(cl.ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		cl.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// quietRedis drops go-redis's internal log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
