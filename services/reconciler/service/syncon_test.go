package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Sync turned on at 9:00 in the morning after a slot the tenant was not
// synced for: no catch-up run starts at once (in business hours, for a
// slot from before sync was on); what optoutctl and the page show names
// 20:00 that day as the first run; an admin's request runs now; the 20:00
// slot then runs as scheduled.
func TestTurningSyncOnRunsAtTheNextSlotUnlessAskedNow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	la := losAngeles(t)
	clock := &recontest.FakeClock{}
	on := time.Date(2026, 3, 10, 9, 0, 0, 0, la)
	clock.Set(on)
	store := h.Settings
	store.Now = clock.Now // as optoutctl tenant set or the page would stamp it
	st, _, err := store.Update(h.Ctx, "acme", func(s *tenant.Settings) error { s.SyncEnabled = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	h.WaitSettings(st)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})

	pass(h, []*service.Service{svc})
	if hist := h.History("acme"); len(hist) != 0 {
		t.Fatalf("turning sync on started %d runs at once (first: %s for slot %s); want none before the next slot", len(hist), hist[0].Trigger.Kind, hist[0].Trigger.Slot)
	}
	slot := time.Date(2026, 3, 10, 20, 0, 0, 0, la)
	claim, err := h.Store.Slot(h.Ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	next := runview.NextRun(h.Cache.Get("acme"), claim, nil, clock.Now())
	if next.Due || !next.First || !next.At.Equal(slot) || !strings.Contains(next.Text, "the first since sync was turned on") {
		t.Errorf("next run %+v; want the first at %s, not due", next, slot.UTC())
	}

	// Asked for now: it runs now.
	rep := svc.Trigger(h.Ctx, "acme", runs.ControlRequest{By: "admin-page:jdoe"}, noSpan)
	if !rep.Accepted {
		t.Fatalf("run request refused: %+v", rep)
	}
	if r := h.WaitFinal("acme", rep.RunID); r.Status != runs.StatusSucceeded || r.Trigger.Kind != runs.TriggerManual {
		t.Fatalf("requested run: %s %s (%s)", r.Trigger.Kind, r.Status, r.Reason)
	}
	svc.Wait() // its lease released

	// The slot comes: the scheduled run.
	clock.Set(slot.Add(5 * time.Second))
	pass(h, []*service.Service{svc})
	hist := h.History("acme")
	if len(hist) != 2 {
		t.Fatalf("%d runs; want the requested one and the 20:00 slot's", len(hist))
	}
	var scheduled int
	for _, r := range hist {
		if r.Trigger.Kind == runs.TriggerSchedule && r.Trigger.Slot.Equal(slot) {
			scheduled++
		}
	}
	if scheduled != 1 {
		t.Errorf("runs %+v; want one scheduled run for %s", hist, slot)
	}
}
