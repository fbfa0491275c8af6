package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
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
