package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// harness is recontest's, with replicas that are just an engine and a lease
// locker: each run is started here as the service would start it (lease
// taken without waiting, with a fence above the newest the runs bucket saw;
// an unfinished run resumed from its checkpoint), so these tests see the
// engine alone.
type harness struct{ *recontest.Harness }

func newHarness(t *testing.T, orgNames ...string) *harness {
	t.Helper()
	return &harness{recontest.New(t, orgNames...)}
}

// replica is one simulated reconciler replica: an engine and its lease locker.
type replica struct {
	h      *harness
	eng    *engine.Engine
	locker *lock.Locker
	wg     sync.WaitGroup
}

func (h *harness) replica(o recontest.ReplicaOpts) *replica {
	h.T.Helper()
	return &replica{h: h, eng: h.Engine(o.Options()), locker: h.Locker(o.Options())}
}

// start takes the tenant's lease and runs the tenant in the background,
// resuming its unfinished run if there is one; it returns the run's id, or
// "" when another replica holds the lease.
func (r *replica) start(tn string, dry bool) string { return r.startJob(tn, dry, nil) }

// startJob is start with the job changed by mod (e.g. a full scan asked for).
func (r *replica) startJob(tn string, dry bool, mod func(*engine.Job)) string {
	h := r.h
	h.T.Helper()
	f, err := h.Store.Fence(h.Ctx, tn)
	if err != nil {
		h.T.Fatal(err)
	}
	lease, err := r.locker.TryAcquire(h.Ctx, tn, lock.MinFence(f.Fence))
	if errors.Is(err, lock.ErrNotAcquired) {
		return ""
	}
	if err != nil {
		h.T.Fatal(err)
	}
	job := engine.Job{Tenant: tn, Settings: h.Cache.Get(tn), Lease: lease, DryRun: dry,
		Trigger: runs.Trigger{Kind: runs.TriggerManual, By: "test"}}
	cp, err := h.Store.Active(lease.Context(), tn)
	switch {
	case err == nil && dry:
		release(lease)
		h.T.Fatalf("a dry run asked for while run %s is unfinished", cp.Report.RunID)
	case err == nil:
		job.RunID, job.Trigger, job.Resume = cp.Report.RunID, cp.Report.Trigger, &cp
	case errors.Is(err, runs.ErrNotFound):
		job.RunID = runs.NewRunID(time.Now())
	default:
		release(lease)
		h.T.Fatal(err)
	}
	if mod != nil {
		mod(&job)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer release(lease)
		_, _ = r.eng.Run(lease.Context(), job) // the report is read from the store
	}()
	return job.RunID
}

func release(lease *lock.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = lease.Release(ctx)
}

// wait waits for the runs the replica started.
func (r *replica) wait() { r.wg.Wait() }

// runNow runs a tenant on r and returns the stored report.
func (h *harness) runNow(r *replica, tn string, dry bool) runs.Report {
	h.T.Helper()
	id := r.start(tn, dry)
	if id == "" {
		h.T.Fatalf("run of %s refused: another replica holds the lease", tn)
	}
	r.wait()
	return h.Report(tn, id)
}

// takeOver has replica b resume the tenant's run as soon as the lease is
// free, and waits for it.
func takeOver(h *harness, b *replica, tn, runID string) runs.Report {
	h.T.Helper()
	var id string
	h.Eventually("replica-b resumes the run", func() bool {
		id = b.start(tn, false)
		return id != ""
	})
	if id != runID {
		h.T.Fatalf("replica-b ran %s; want it to resume run %s", id, runID)
	}
	b.wait()
	return h.Report(tn, runID)
}

// killedRun seeds acme and starts a run on replica-a with batches of 2,
// killed the n-th time it reaches point: its Redis client closed (the
// process is gone: no renewal, no release). Replica-b, with the same
// batches, is there to resume the run; started is the run's id.
func killedRun(t *testing.T, point string, n int) (h *harness, s *recontest.Scenario, b *replica, started string) {
	t.Helper()
	h = newHarness(t, "acme")
	s = h.Seed("acme", false, tenant.PolicyOptOutWins)
	rdbA := locktest.Client(t)
	var once sync.Once
	var hits atomic.Int32
	small := func(c *engine.Config) { c.LedgerBatch, c.WriteBatch = 2, 2 }
	crash := engine.Hooks{At: func(ctx context.Context, at string) {
		if at == point && int(hits.Add(1)) == n {
			once.Do(func() { _ = rdbA.Close() })
			<-ctx.Done()
		}
	}}
	a := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: crash, Cfg: small})
	b = h.replica(recontest.ReplicaOpts{Name: "replica-b", Cfg: small})
	if started = a.start("acme", false); started == "" {
		t.Fatal("replica-a refused: the lease is held")
	}
	a.wait()
	if hits.Load() < int32(n) {
		t.Fatalf("the run never reached %s#%d", point, n)
	}
	return h, s, b, started
}
