package service_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/schedule"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// serve runs a replica (control subscription included) with nothing due:
// the current slot of every tenant is claimed beforehand.
func serve(h *harness, svc *service.Service, clock *fakeClock, tenants ...string) {
	h.t.Helper()
	for _, tn := range tenants {
		c, err := schedule.Parse(h.cache.Get(tn))
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := h.store.ClaimSlot(h.ctx, tn, c.Latest(clock.Now()), "claimed-by-test", "test"); err != nil {
			h.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			h.t.Errorf("replica: %v", err)
		}
	}()
	h.t.Cleanup(func() { cancel(); <-done })
	h.eventually("control subscription", func() bool {
		_, err := runs.Request(h.ctx, h.nc, h.topo, "no-such-tenant", runs.ControlRequest{DryRun: true})
		return err == nil
	})
}

func (h *harness) waitFinal(tn, runID string) runs.Report {
	h.t.Helper()
	var rep runs.Report
	h.eventually("run "+runID+" finished", func() bool {
		r, err := h.store.Report(h.ctx, tn, runID)
		rep = r
		return err == nil && r.Status.Final()
	})
	return rep
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	s := h.seed("acme", false, tenant.PolicyLatestWins)
	clock := &fakeClock{}
	clock.Set(time.Now())
	svc := h.replica(replicaOpts{name: "replica-a", clock: clock})
	serve(h, svc, clock, "acme")

	sfBefore := h.org("acme").Records()
	revs := h.ledgerRevisions("acme")
	// The audit stream copies the seeded entries server-side, a moment
	// after they are written: count it once it has caught up.
	if err := ledger.WaitAudited(h.ctx, h.prov.JS, h.topo); err != nil {
		t.Fatal(err)
	}
	auditBefore := h.streamMsgs(h.topo.AuditStream())

	reply, err := runs.Request(h.ctx, h.nc, h.topo, "acme", runs.ControlRequest{DryRun: true, By: "optoutctl:ops"})
	if err != nil || !reply.Accepted || !reply.DryRun || reply.RunID == "" || reply.Replica != "replica-a" {
		t.Fatalf("reply %+v, %v", reply, err)
	}
	rep := h.waitFinal("acme", reply.RunID)
	if rep.Status != runs.StatusSucceeded || !rep.DryRun || rep.Trigger.Kind != runs.TriggerManual || rep.Trigger.By != "optoutctl:ops" {
		t.Fatalf("report %s dry=%v trigger=%+v (%s)", rep.Status, rep.DryRun, rep.Trigger, rep.Reason)
	}
	// Everything computed...
	if rep.Counts != s.wantCounts() {
		t.Errorf("counts\n got %+v\nwant %+v", rep.Counts, s.wantCounts())
	}
	if w := rep.Writes; w.PlannedSalesforce != 3 || w.PlannedSalesConnect != 4 || w.Remaining != 7 ||
		w.SalesforceWritten != 0 || w.LedgerWritten != 0 || w.EventsPublished != 0 {
		t.Errorf("writes %+v; want 3+4 planned and none made", w)
	}
	// ...and nothing changed.
	if !reflect.DeepEqual(h.org("acme").Records(), sfBefore) {
		t.Error("Salesforce records changed")
	}
	if n := h.sfWrites("acme", ""); n != 0 {
		t.Errorf("%d Salesforce write calls", n)
	}
	if !reflect.DeepEqual(h.ledgerRevisions("acme"), revs) {
		t.Error("ledger entries changed")
	}
	if n := h.streamMsgs(h.topo.AppliedStream()); n != 0 {
		t.Errorf("%d applied events published", n)
	}
	if err := ledger.WaitAudited(h.ctx, h.prov.JS, h.topo); err != nil {
		t.Fatal(err)
	}
	if n := h.streamMsgs(h.topo.AuditStream()); n != auditBefore {
		t.Errorf("audit stream grew from %d to %d", auditBefore, n)
	}
	if _, err := h.store.LastSuccess(h.ctx, "acme"); err == nil {
		t.Error("a dry run was recorded as the last successful run")
	}
}

func TestMassResubscribeGuardStopsTheRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.setSettings("acme", func(st *tenant.Settings) { st.ConflictPolicy = tenant.PolicyLatestWins })
	now := time.Now().UTC().Truncate(time.Millisecond)
	t0 := now.Add(-10 * 24 * time.Hour)
	var cleared []string
	for i := range 30 {
		// Twelve of thirty confirmed opt-outs were un-ticked in Salesforce
		// after the opt-out: a bulk edit, not twelve people.
		unticked := i < 12
		at := t0.Add(-time.Hour)
		if unticked {
			at = t0.Add(24 * time.Hour)
		}
		r := h.org("acme").Put(sandbox.Record{Type: "Contact", HasOptedOutOfEmail: !unticked, SystemModstamp: at})
		if unticked {
			cleared = append(cleared, r.ID)
		}
		key := optout.Key("acme", "sc-"+r.ID, "")
		h.putEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + r.ID, SalesforceID: r.ID, ObjectType: "Contact",
			OptedOut: true, DecidedAt: t0, Field: tenant.StandardField, Confirmed: ptr(true), SetByUs: true, State: optout.StateSynced})
	}
	revs := h.ledgerRevisions("acme")

	svc := h.replica(replicaOpts{name: "replica-a"})
	rep := h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusStoppedGuard || rep.Guard == nil || !rep.Guard.Tripped ||
		rep.Guard.Resubscribes != 12 || rep.Guard.Limit != 10 || !strings.Contains(rep.Reason, "mass-resubscribe guard") {
		t.Fatalf("report %s guard %+v reason %q", rep.Status, rep.Guard, rep.Reason)
	}
	if !reflect.DeepEqual(h.ledgerRevisions("acme"), revs) || h.streamMsgs(h.topo.AppliedStream()) != 0 || h.sfWrites("acme", "") != 0 {
		t.Fatal("the guard let writes through")
	}
	if w := rep.Writes; w.Remaining != 12 || w.LedgerWritten != 0 {
		t.Errorf("writes %+v", w)
	}

	// With the threshold above twelve, the same run applies them: the
	// guard, nothing else, stopped it.
	lenient := h.replica(replicaOpts{name: "replica-b", cfg: func(c *engine.Config) { c.ResubscribeMin = 12 }})
	rep = h.runNow(lenient, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Counts.ResubscribesApplied != 12 || rep.Guard.Tripped {
		t.Fatalf("lenient run: %s (%s) %+v", rep.Status, rep.Reason, rep.Counts)
	}
	for _, id := range cleared {
		if e, _ := h.entry(optout.Key("acme", "sc-"+id, "")); e.OptedOut {
			t.Fatalf("resubscribe of %s not applied under latest-wins", id)
		}
	}
}

func TestAPIBudgetStopsTheRunAndTheNextRunFinishes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.setSettings("acme", nil)
	var ids []string
	for range 30 { // opted out in Sales Connect only
		r := h.org("acme").Put(sandbox.Record{Type: "Contact"})
		ids = append(ids, r.ID)
		h.putEntry(optout.Key("acme", "sc-"+r.ID, ""), optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + r.ID, SalesforceID: r.ID,
			ObjectType: "Contact", OptedOut: true, DecidedAt: time.Now().Add(-time.Hour), Field: tenant.StandardField, State: optout.StatePending})
	}
	org := h.org("acme")
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(960) // 40 left today
	svc := h.replica(replicaOpts{name: "replica-a", cfg: func(c *engine.Config) { c.WriteBatch = 5 }})

	before := org.APICalls()
	rep := h.runNow(svc, "acme", false)
	spent := int64(org.APICalls() - before)
	// 20% of the 39 left after GET /limits: 7 calls. Limits, two
	// describes and two reads leave two writes of five records.
	if rep.Status != runs.StatusStoppedBudget || rep.API.Budget != 7 || rep.API.Spent != 7 || spent != 7 {
		t.Fatalf("report %s (%s): budget %d, spent %d (org counted %d)", rep.Status, rep.Reason, rep.API.Budget, rep.API.Spent, spent)
	}
	if w := rep.Writes; w.SalesforceWritten != 10 || w.Remaining != 20 {
		t.Fatalf("writes %+v; want 10 written and 20 left", w)
	}
	written := 0
	for _, id := range ids {
		if r, _ := org.Get(id); r.HasOptedOutOfEmail {
			written++
		}
	}
	if written != 10 {
		t.Fatalf("%d records written; want 10", written)
	}

	org.SetAPIUsage(0) // a new day
	next := h.runNow(svc, "acme", false)
	if next.Status != runs.StatusSucceeded || next.Writes.SalesforceWritten != 20 || next.Counts.SalesConnectOnly != 20 {
		t.Fatalf("next run: %s (%s) %+v %+v", next.Status, next.Reason, next.Writes, next.Counts)
	}
	for _, id := range ids {
		if r, _ := org.Get(id); !r.HasOptedOutOfEmail {
			t.Fatalf("record %s still not opted out after the next run", id)
		}
	}
}

// A budget spent while reading stops the run with nothing written: the
// call over the budget is refused before it leaves the process.
func TestAPIBudgetStopsAReadAtTheLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	s := h.seed("acme", false, tenant.PolicyOptOutWins)
	org := h.org("acme")
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(975) // 24 left after GET /limits: a budget of 4
	svc := h.replica(replicaOpts{name: "replica-a", cfg: func(c *engine.Config) { c.Read.Mode = "soql" }})
	revs := h.ledgerRevisions("acme")
	before := org.APICalls()
	rep := h.runNow(svc, "acme", false)
	// The org may count fewer: the read still in flight when the other was
	// refused is cancelled, possibly before it arrived.
	if rep.Status != runs.StatusStoppedBudget || rep.API.Budget != 4 || rep.API.Spent != 4 || org.APICalls()-before > 4 {
		t.Fatalf("report %s (%s): budget %d spent %d, org counted %d", rep.Status, rep.Reason, rep.API.Budget, rep.API.Spent, org.APICalls()-before)
	}
	if !reflect.DeepEqual(h.ledgerRevisions("acme"), revs) || h.sfWrites("acme", "") != 0 {
		t.Fatal("a run stopped while reading wrote something")
	}
	org.SetAPIUsage(0)
	if next := h.runNow(svc, "acme", false); next.Status != runs.StatusSucceeded {
		t.Fatalf("next run %s (%s)", next.Status, next.Reason)
	}
	s.checkFinal()
}

func TestControlRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.setSettings("acme", nil)
	clock := &fakeClock{}
	clock.Set(time.Now())
	stop := newStopAt("after-read", 1)
	svc := h.replica(replicaOpts{name: "replica-a", clock: clock, hooks: stop.hooks()})
	serve(h, svc, clock, "acme")
	t.Cleanup(stop.let) // before serve's cleanup waits for the run

	// Sync disabled: only a dry run may run.
	rep, err := runs.Request(h.ctx, h.nc, h.topo, "globex", runs.ControlRequest{})
	if err != nil || rep.Accepted || rep.Code != runs.CodeSyncDisabled {
		t.Fatalf("sync disabled: %+v, %v", rep, err)
	}
	// A body that is not a request.
	msg, err := h.nc.RequestWithContext(h.ctx, h.topo.ControlSubject(runs.ControlVerb, "acme"), []byte("{run it"))
	if err != nil {
		t.Fatal(err)
	}
	if json.Unmarshal(msg.Data, &rep) != nil || rep.Code != runs.CodeBadRequest {
		t.Fatalf("bad body: %s", msg.Data)
	}
	if r := svc.Trigger(h.ctx, "acme!", runs.ControlRequest{}, noSpan); r.Code != runs.CodeBadRequest {
		t.Fatalf("bad tenant: %+v", r)
	}
	// A run in progress: a second request is refused with its id.
	first, err := runs.Request(h.ctx, h.nc, h.topo, "acme", runs.ControlRequest{By: "test"})
	if err != nil || !first.Accepted {
		t.Fatalf("first: %+v, %v", first, err)
	}
	<-stop.reached
	second, err := runs.Request(h.ctx, h.nc, h.topo, "acme", runs.ControlRequest{DryRun: true})
	if err != nil || second.Accepted || second.Code != runs.CodeBusy || second.ActiveRunID != first.RunID {
		t.Fatalf("second: %+v, %v", second, err)
	}
	st, err := h.store.Status(h.ctx, "acme")
	if err != nil || st.Active == nil || st.Active.Report.Phase != runs.PhaseReadingSalesforce || st.Active.Report.Status != runs.StatusRunning {
		t.Fatalf("status while running: %+v, %v", st.Active, err)
	}
	stop.let()
	if r := h.waitFinal("acme", first.RunID); r.Status != runs.StatusSucceeded {
		t.Fatalf("run %s (%s)", r.Status, r.Reason)
	}
}
