package engine_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	s := h.Seed("acme", false, tenant.PolicyLatestWins)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a"})

	sfBefore := h.Org("acme").Records()
	revs := h.LedgerRevisions("acme")
	// The audit stream copies the seeded entries server-side, a moment
	// after they are written: count it once it has caught up.
	if err := ledger.WaitAudited(h.Ctx, h.Prov.JS, h.Topo); err != nil {
		t.Fatal(err)
	}
	auditBefore := h.StreamMsgs(h.Topo.AuditStream())

	rep := h.runNow(svc, "acme", true)
	if rep.Status != runs.StatusSucceeded || !rep.DryRun {
		t.Fatalf("report %s dry=%v (%s)", rep.Status, rep.DryRun, rep.Reason)
	}
	// Everything computed...
	if rep.Counts != s.WantCounts() {
		t.Errorf("counts\n got %+v\nwant %+v", rep.Counts, s.WantCounts())
	}
	if w := rep.Writes; w.PlannedSalesforce != 3 || w.PlannedSalesConnect != 4 || w.Remaining != 7 ||
		w.SalesforceWritten != 0 || w.LedgerWritten != 0 || w.EventsPublished != 0 {
		t.Errorf("writes %+v; want 3+4 planned and none made", w)
	}
	// The changes it would make, listed record by record (confirmations
	// are not changes).
	p := rep.Preview
	if p == nil || p.Total != len(p.Changes) || p.Total != int(rep.Writes.PlannedSalesforce+rep.Writes.PlannedSalesConnect-rep.Writes.PlannedConfirmations) {
		t.Fatalf("preview %+v; want every planned change listed (%+v)", p, rep.Writes)
	}
	inOrg := map[string]bool{}
	for _, r := range sfBefore {
		inOrg[r.ID] = true
	}
	sides := map[string]int{}
	for _, c := range p.Changes {
		sides[c.Side]++
		if !inOrg[c.SalesforceID] {
			t.Errorf("change %+v names no record of the org", c)
		}
		if c.What == "confirm" {
			t.Errorf("a confirmation listed as a change: %+v", c)
		}
	}
	if sides[runs.ChangeSalesforce] != 3 {
		t.Errorf("preview sides %v; want the 3 Salesforce writes", sides)
	}
	// ...and nothing changed.
	if !reflect.DeepEqual(h.Org("acme").Records(), sfBefore) {
		t.Error("Salesforce records changed")
	}
	if n := h.SFWrites("acme", ""); n != 0 {
		t.Errorf("%d Salesforce write calls", n)
	}
	if !reflect.DeepEqual(h.LedgerRevisions("acme"), revs) {
		t.Error("ledger entries changed")
	}
	if n := h.StreamMsgs(h.Topo.AppliedStream()); n != 0 {
		t.Errorf("%d applied events published", n)
	}
	if err := ledger.WaitAudited(h.Ctx, h.Prov.JS, h.Topo); err != nil {
		t.Fatal(err)
	}
	if n := h.StreamMsgs(h.Topo.AuditStream()); n != auditBefore {
		t.Errorf("audit stream grew from %d to %d", auditBefore, n)
	}
	if _, err := h.Store.LastSuccess(h.Ctx, "acme"); err == nil {
		t.Error("a dry run was recorded as the last successful run")
	}
}

func TestMassResubscribeGuardStopsTheRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", func(st *tenant.Settings) { st.ConflictPolicy = tenant.PolicyLatestWins })
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
		r := h.Org("acme").Put(sandbox.Record{Type: "Contact", HasOptedOutOfEmail: !unticked, SystemModstamp: at})
		if unticked {
			cleared = append(cleared, r.ID)
		}
		key := optout.Key("acme", "sc-"+r.ID, "")
		h.PutEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + r.ID, SalesforceID: r.ID, ObjectType: "Contact",
			OptedOut: true, DecidedAt: t0, Field: tenant.StandardField, Confirmed: recontest.Ptr(true), SetByUs: true, State: optout.StateSynced})
	}
	revs := h.LedgerRevisions("acme")

	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a"})
	rep := h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusStoppedGuard || rep.Guard == nil || !rep.Guard.Tripped ||
		rep.Guard.Resubscribes != 12 || rep.Guard.Limit != 10 || !strings.Contains(rep.Reason, "mass-resubscribe guard") {
		t.Fatalf("report %s guard %+v reason %q", rep.Status, rep.Guard, rep.Reason)
	}
	if !reflect.DeepEqual(h.LedgerRevisions("acme"), revs) || h.StreamMsgs(h.Topo.AppliedStream()) != 0 || h.SFWrites("acme", "") != 0 {
		t.Fatal("the guard let writes through")
	}
	if w := rep.Writes; w.Remaining != 12 || w.LedgerWritten != 0 {
		t.Errorf("writes %+v", w)
	}

	// With the threshold above twelve, the same run applies them: the
	// guard, nothing else, stopped it.
	lenient := h.replica(recontest.ReplicaOpts{Name: "replica-b", Cfg: func(c *engine.Config) { c.ResubscribeMin = 12 }})
	rep = h.runNow(lenient, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Counts.ResubscribesApplied != 12 || rep.Guard.Tripped {
		t.Fatalf("lenient run: %s (%s) %+v", rep.Status, rep.Reason, rep.Counts)
	}
	for _, id := range cleared {
		if e, _ := h.Entry(optout.Key("acme", "sc-"+id, "")); e.OptedOut {
			t.Fatalf("resubscribe of %s not applied under latest-wins", id)
		}
	}
}

func TestAPIBudgetStopsTheRunAndTheNextRunFinishes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	var ids []string
	for range 30 { // opted out in Sales Connect only
		r := h.Org("acme").Put(sandbox.Record{Type: "Contact"})
		ids = append(ids, r.ID)
		h.PutEntry(optout.Key("acme", "sc-"+r.ID, ""), optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + r.ID, SalesforceID: r.ID,
			ObjectType: "Contact", OptedOut: true, DecidedAt: time.Now().Add(-time.Hour), Field: tenant.StandardField, State: optout.StatePending})
	}
	org := h.Org("acme")
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(960) // 40 left today
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.WriteBatch = 5 }})

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
	s := h.Seed("acme", false, tenant.PolicyOptOutWins)
	org := h.Org("acme")
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(975) // 24 left after GET /limits: a budget of 4
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.Read.Mode = "soql" }})
	revs := h.LedgerRevisions("acme")
	before := org.APICalls()
	rep := h.runNow(svc, "acme", false)
	// The org may count fewer: the read still in flight when the other was
	// refused is cancelled, possibly before it arrived.
	if rep.Status != runs.StatusStoppedBudget || rep.API.Budget != 4 || rep.API.Spent != 4 || org.APICalls()-before > 4 {
		t.Fatalf("report %s (%s): budget %d spent %d, org counted %d", rep.Status, rep.Reason, rep.API.Budget, rep.API.Spent, org.APICalls()-before)
	}
	if !reflect.DeepEqual(h.LedgerRevisions("acme"), revs) || h.SFWrites("acme", "") != 0 {
		t.Fatal("a run stopped while reading wrote something")
	}
	org.SetAPIUsage(0)
	if next := h.runNow(svc, "acme", false); next.Status != runs.StatusSucceeded {
		t.Fatalf("next run %s (%s)", next.Status, next.Reason)
	}
	s.CheckFinal()
}

// A run stopped by its budget before it had read Salesforce could not
// compare: its report says "not compared" wherever it would say what
// remains, never 0; a run stopped after comparing says what remains.
func TestABudgetStopBeforeTheReadSaysNotCompared(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.Seed("acme", false, tenant.PolicyOptOutWins)
	org := h.Org("acme")
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(975) // a budget of 4: spent before the read ends
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.Read.Mode = "soql" }})
	rep := h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusStoppedBudget {
		t.Fatalf("report %s (%s); want stopped by the budget", rep.Status, rep.Reason)
	}
	if !rep.NotCompared {
		t.Error("report of a run stopped while reading is not marked notCompared")
	}
	for what, got := range map[string]string{"remaining": runview.Remaining(rep), "compared": runview.Compared(rep),
		"planned": runview.Planned(rep), "written": runview.Written(rep)} {
		if !strings.Contains(got, "not compared") || strings.Contains(got, "remaining 0") {
			t.Errorf("%s says %q; want \"not compared\"", what, got)
		}
	}

	org.SetAPIUsage(960) // enough to compare, not to write everything
	cmp := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-b", Cfg: func(c *engine.Config) { c.Read.Mode = "soql"; c.WriteBatch = 1 }}), "acme", false)
	if cmp.NotCompared || cmp.Status != runs.StatusStoppedBudget || cmp.Writes.Remaining == 0 {
		t.Fatalf("second run %s (%s), notCompared %t, writes %+v; want stopped by the budget after comparing, with changes left", cmp.Status, cmp.Reason, cmp.NotCompared, cmp.Writes)
	}
	if got, want := runview.Remaining(cmp), fmt.Sprint(cmp.Writes.Remaining); got != want {
		t.Errorf("remaining after comparing = %q; want %q", got, want)
	}
}
