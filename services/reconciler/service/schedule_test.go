package service_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func losAngeles(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(tenant.DefaultZone)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// pass runs one scheduling pass on every replica at once and waits for the
// runs it started.
func pass(h *harness, replicas []*service.Service) {
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(func() {
			if err := r.RunDue(h.Ctx); err != nil {
				h.T.Errorf("RunDue: %v", err)
			}
		})
	}
	wg.Wait()
	for _, r := range replicas {
		r.Wait()
	}
}

func TestThreeReplicasRunEachTenantOncePerSlot(t *testing.T) {
	t.Parallel()
	tenants := []string{"t1", "t2", "t3", "t4"}
	h := newHarness(t, tenants...)
	for _, tn := range tenants {
		h.SetSettings(tn, nil)
		h.Org(tn).Put(sandbox.Record{Type: "Contact", HasOptedOutOfEmail: true})
	}
	la := losAngeles(t)
	clock := &recontest.FakeClock{}
	var replicas []*service.Service
	for _, name := range []string{"replica-a", "replica-b", "replica-c"} {
		// One run at a time each, so the four tenants must spread.
		replicas = append(replicas, h.replicaMax(recontest.ReplicaOpts{Name: name, Clock: clock}, 1))
	}

	bySlot := func(tn string, slot time.Time) []runs.Report {
		var out []runs.Report
		for _, r := range h.History(tn) {
			if r.Trigger.Slot.Equal(slot) {
				out = append(out, r)
			}
		}
		return out
	}
	runSlot := func(slot, at time.Time, kind runs.TriggerKind) {
		t.Helper()
		clock.Set(at)
		for i := 0; i < 20; i++ {
			all := true
			for _, tn := range tenants {
				all = all && len(bySlot(tn, slot)) > 0
			}
			if all {
				break
			}
			pass(h, replicas)
		}
		// More passes in the same slot start nothing.
		pass(h, replicas)
		pass(h, replicas)
		holders := map[string]bool{}
		for _, tn := range tenants {
			got := bySlot(tn, slot)
			if len(got) != 1 {
				t.Fatalf("tenant %s: %d runs for the slot %s; want exactly 1", tn, len(got), slot)
			}
			if got[0].Status != runs.StatusSucceeded || got[0].Trigger.Kind != kind {
				t.Fatalf("tenant %s: %s run %s (%s)", tn, got[0].Trigger.Kind, got[0].Status, got[0].Reason)
			}
			holders[got[0].Holder] = true
		}
		if len(holders) < 2 {
			t.Errorf("all four tenants ran on %v; want them spread over the replicas", holders)
		}
	}
	first := time.Date(2026, 3, 10, 20, 0, 0, 0, la)
	// The replicas start the morning after a slot nobody ran: each tenant
	// is caught up once, then runs once per slot.
	runSlot(first.AddDate(0, 0, -1), first.Add(-10*time.Hour), runs.TriggerCatchUp)
	runSlot(first, first.Add(5*time.Second), runs.TriggerSchedule)
	runSlot(first.AddDate(0, 0, 1), first.AddDate(0, 0, 1).Add(5*time.Second), runs.TriggerSchedule)
	for _, tn := range tenants {
		if n := len(h.History(tn)); n != 3 {
			t.Errorf("tenant %s: %d runs; want 3 (catch-up and two slots)", tn, n)
		}
	}
}

// The schedule fires at 20:00 Los Angeles time on each day around both 2026
// daylight-saving changes, stepping an injected clock by half-hours; the
// first pass catches up the slot missed before the replica started.
func TestScheduleFiresAt2000LocalAcrossDST(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	la := losAngeles(t)
	clock := &recontest.FakeClock{}
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})
	step := 30 * time.Minute
	for _, start := range []time.Time{time.Date(2026, 3, 6, 0, 0, 0, 0, la), time.Date(2026, 10, 29, 0, 0, 0, 0, la)} {
		for now := start; now.Before(start.AddDate(0, 0, 6)); now = now.Add(step) {
			clock.Set(now)
			if err := svc.RunDue(h.Ctx); err != nil {
				t.Fatal(err)
			}
			svc.Wait()
		}
	}
	hist := h.History("acme")
	wantSlots := []string{
		"2026-03-06T04:00:00Z", // 5 March 20:00 PST, caught up at start
		"2026-03-07T04:00:00Z", "2026-03-08T04:00:00Z",
		"2026-03-09T03:00:00Z", // 8 March, the change day: 20:00 PDT
		"2026-03-10T03:00:00Z", "2026-03-11T03:00:00Z", "2026-03-12T03:00:00Z",
		"2026-10-29T03:00:00Z", // 28 October 20:00 PDT, caught up
		"2026-10-30T03:00:00Z", "2026-10-31T03:00:00Z", "2026-11-01T03:00:00Z",
		"2026-11-02T04:00:00Z", // 1 November, the change day: 20:00 PST
		"2026-11-03T04:00:00Z", "2026-11-04T04:00:00Z",
	}
	if len(hist) != len(wantSlots) {
		for _, r := range hist {
			t.Logf("run at slot %s (%s)", r.Trigger.Slot, r.Trigger.Kind)
		}
		t.Fatalf("%d runs; want %d", len(hist), len(wantSlots))
	}
	for i, r := range hist {
		slot := r.Trigger.Slot
		if slot.UTC().Format(time.RFC3339) != wantSlots[i] {
			t.Errorf("run %d: slot %s; want %s", i, slot.UTC().Format(time.RFC3339), wantSlots[i])
		}
		if l := slot.In(la); l.Hour() != 20 || l.Minute() != 0 {
			t.Errorf("run %d: slot at %s local; want 20:00", i, l)
		}
		wantKind := runs.TriggerSchedule
		if i == 0 || i == 7 {
			wantKind = runs.TriggerCatchUp
		}
		if r.Trigger.Kind != wantKind || r.Status != runs.StatusSucceeded {
			t.Errorf("run %d: %s %s; want a succeeded %s run", i, r.Trigger.Kind, r.Status, wantKind)
		}
		// Started at the first pass at or after the slot.
		if wantKind == runs.TriggerSchedule && (r.StartedAt.Before(slot) || !r.StartedAt.Before(slot.Add(step))) {
			t.Errorf("run %d started at %s for the slot %s", i, r.StartedAt, slot)
		}
	}
}

// beforeFirstEval runs f once, before a replica's first Lua script (its
// first lease attempt).
type beforeFirstEval struct {
	once sync.Once
	f    func()
}

func (b *beforeFirstEval) DialHook(next redis.DialHook) redis.DialHook { return next }
func (b *beforeFirstEval) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := strings.ToLower(cmd.Name()); n == "evalsha" || n == "eval" {
			b.once.Do(b.f)
		}
		return next(ctx, cmd)
	}
}
func (b *beforeFirstEval) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Replica B finds the slot due, but replica A runs it to the end before B
// gets the lease: B must see the claim and not run the slot again.
func TestASlotRunMeanwhileIsNotRunTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	clock := &recontest.FakeClock{}
	slot := time.Date(2026, 3, 10, 20, 0, 0, 0, losAngeles(t))
	clock.Set(slot.Add(time.Second))
	a := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})
	rdbB := locktest.Client(t)
	rdbB.AddHook(&beforeFirstEval{f: func() {
		if err := a.RunDue(h.Ctx); err != nil {
			t.Error(err)
		}
		a.Wait()
	}})
	b := h.replica(recontest.ReplicaOpts{Name: "replica-b", Clock: clock, RDB: rdbB})
	if err := b.RunDue(h.Ctx); err != nil {
		t.Fatal(err)
	}
	b.Wait()
	hist := h.History("acme")
	if len(hist) != 1 || hist[0].Holder != "replica-a" || !hist[0].Trigger.Slot.Equal(slot) {
		for _, r := range hist {
			t.Logf("run %s by %s for %s", r.RunID, r.Holder, r.Trigger.Slot)
		}
		t.Fatalf("%d runs for the slot; want exactly replica-a's", len(hist))
	}
}
