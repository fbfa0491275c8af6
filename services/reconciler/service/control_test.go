package service_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/domain/schedule"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// serve runs a replica (control subscription included) with nothing due:
// the current slot of every tenant is claimed beforehand.
func serve(h *harness, svc *service.Service, clock *recontest.FakeClock, tenants ...string) {
	h.T.Helper()
	for _, tn := range tenants {
		c, err := schedule.Parse(h.Cache.Get(tn).ScheduleTime, h.Cache.Get(tn).ScheduleZone)
		if err != nil {
			h.T.Fatal(err)
		}
		if _, err := h.Store.ClaimSlot(h.Ctx, tn, c.Latest(clock.Now()), "claimed-by-test", "test"); err != nil {
			h.T.Fatal(err)
		}
	}
	h.Run(svc)
	h.Eventually("control subscription", func() bool {
		_, err := runs.Request(h.Ctx, h.NC, h.Topo, "no-such-tenant", runs.ControlRequest{DryRun: true})
		return err == nil
	})
}

func TestControlRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	clock := &recontest.FakeClock{}
	clock.Set(time.Now())
	stop := recontest.NewStopAt("after-read", 1)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock, Hooks: stop.Hooks()})
	serve(h, svc, clock, "acme")
	t.Cleanup(stop.Let) // before serve's cleanup waits for the run

	// Sync disabled: only a dry run may run.
	rep, err := runs.Request(h.Ctx, h.NC, h.Topo, "globex", runs.ControlRequest{})
	if err != nil || rep.Accepted || rep.Code != runs.CodeSyncDisabled {
		t.Fatalf("sync disabled: %+v, %v", rep, err)
	}
	// A body that is not a request.
	msg, err := h.NC.RequestWithContext(h.Ctx, h.Topo.ControlSubject(runs.ControlVerb, "acme"), []byte("{run it"))
	if err != nil {
		t.Fatal(err)
	}
	if json.Unmarshal(msg.Data, &rep) != nil || rep.Code != runs.CodeBadRequest {
		t.Fatalf("bad body: %s", msg.Data)
	}
	if r := svc.Trigger(h.Ctx, "acme!", runs.ControlRequest{}, noSpan); r.Code != runs.CodeBadRequest {
		t.Fatalf("bad tenant: %+v", r)
	}
	// A run in progress: a second request is refused with its id.
	first, err := runs.Request(h.Ctx, h.NC, h.Topo, "acme", runs.ControlRequest{By: "test"})
	if err != nil || !first.Accepted {
		t.Fatalf("first: %+v, %v", first, err)
	}
	<-stop.Reached
	second, err := runs.Request(h.Ctx, h.NC, h.Topo, "acme", runs.ControlRequest{DryRun: true})
	if err != nil || second.Accepted || second.Code != runs.CodeBusy || second.ActiveRunID != first.RunID {
		t.Fatalf("second: %+v, %v", second, err)
	}
	st, err := h.Store.Status(h.Ctx, "acme")
	if err != nil || st.Active == nil || st.Active.Report.Phase != runs.PhaseReadingSalesforce || st.Active.Report.Status != runs.StatusRunning {
		t.Fatalf("status while running: %+v, %v", st.Active, err)
	}
	stop.Let()
	if r := h.WaitFinal("acme", first.RunID); r.Status != runs.StatusSucceeded {
		t.Fatalf("run %s (%s)", r.Status, r.Reason)
	}
}

// A dry-run control request starts a dry run on the replica that answers,
// recorded as a manual run by its requester. (What a dry run leaves
// unchanged is the engine's: engine.TestDryRunChangesNothing.)
func TestADryRunRequestStartsADryRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	clock := &recontest.FakeClock{}
	clock.Set(time.Now())
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})
	serve(h, svc, clock, "acme")

	reply, err := runs.Request(h.Ctx, h.NC, h.Topo, "acme", runs.ControlRequest{DryRun: true, By: "optoutctl:ops"})
	if err != nil || !reply.Accepted || !reply.DryRun || reply.RunID == "" || reply.Replica != "replica-a" {
		t.Fatalf("reply %+v, %v", reply, err)
	}
	rep := h.WaitFinal("acme", reply.RunID)
	if rep.Status != runs.StatusSucceeded || !rep.DryRun || rep.Trigger.Kind != runs.TriggerManual || rep.Trigger.By != "optoutctl:ops" {
		t.Fatalf("report %s dry=%v trigger=%+v (%s)", rep.Status, rep.DryRun, rep.Trigger, rep.Reason)
	}
}

// A replica killed mid-run (its Redis connection gone: no renewals, no
// release) leaves its run unfinished: a dry-run request is refused with the
// run's id, and a real one, once the lease expires, resumes that run on
// another replica rather than starting a new one. (That the resumed run
// ends as an uninterrupted one, wherever it was killed, is the engine's:
// engine.TestKilledRunResumesWithTheSameResult.)
func TestARunRequestResumesAKilledRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	s := h.Seed("acme", false, tenant.PolicyOptOutWins)
	rdbA := locktest.Client(t)
	var once sync.Once
	killed := false
	crash := engine.Hooks{At: func(ctx context.Context, point string) {
		if point == "after-diff" {
			once.Do(func() { killed = true; _ = rdbA.Close() })
			<-ctx.Done()
		}
	}}
	a := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: crash})
	b := h.replica(recontest.ReplicaOpts{Name: "replica-b"})
	started := a.Trigger(h.Ctx, "acme", runs.ControlRequest{By: "test"}, noSpan)
	if !started.Accepted {
		t.Fatalf("replica-a refused: %+v", started)
	}
	a.Wait()
	if !killed {
		t.Fatal("the run never reached after-diff")
	}

	dry := b.Trigger(h.Ctx, "acme", runs.ControlRequest{DryRun: true, By: "test"}, noSpan)
	if dry.Accepted || dry.Code != runs.CodeBusy || dry.ActiveRunID != started.RunID {
		t.Fatalf("dry-run request while the run is unfinished: %+v; want busy with run %s", dry, started.RunID)
	}
	var rep runs.ControlReply
	h.Eventually("replica-b accepts the run", func() bool {
		rep = b.Trigger(h.Ctx, "acme", runs.ControlRequest{By: "test"}, noSpan)
		return rep.Accepted
	})
	if !rep.Resumed || rep.RunID != started.RunID {
		t.Fatalf("replica-b %+v; want it to resume run %s", rep, started.RunID)
	}
	b.Wait()
	final := h.Report("acme", started.RunID)
	if final.Status != runs.StatusSucceeded || final.Attempts != 2 || final.Holder != "replica-b" {
		t.Fatalf("resumed run: %s (%s), attempts %d, holder %s", final.Status, final.Reason, final.Attempts, final.Holder)
	}
	s.CheckFinal()
}
