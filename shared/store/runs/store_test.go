package runs_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

func newStore(t *testing.T) (runs.Store, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	return runs.Store{KV: p.Runs}, ctx
}

func TestFencedWritesAreRefusedAfterANewerHolder(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)

	if err := s.RaiseFence(ctx, "acme", 5, "r1", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.RaiseFence(ctx, "acme", 5, "r1", "a"); err != nil {
		t.Fatalf("raising to the same fence again: %v", err)
	}
	old := runs.Report{RunID: "20260101T000000Z-aaaaaa", Tenant: "acme", Status: runs.StatusRunning, Fence: 5}
	if err := s.SaveReport(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, runs.Checkpoint{Report: old}); err != nil {
		t.Fatal(err)
	}

	// A newer holder takes over.
	if err := s.RaiseFence(ctx, "acme", 6, "r1", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.RaiseFence(ctx, "acme", 5, "r1", "a"); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("lowering the fence: %v; want ErrFenced", err)
	}
	if err := s.CheckFence(ctx, "acme", 5); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("CheckFence(5): %v; want ErrFenced", err)
	}
	stale := old
	stale.Status = runs.StatusSucceeded
	if err := s.SaveReport(ctx, stale); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("stale report: %v; want ErrFenced", err)
	}
	if err := s.SaveCheckpoint(ctx, runs.Checkpoint{Report: stale}); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("stale checkpoint: %v; want ErrFenced", err)
	}
	if err := s.ClearCheckpoint(ctx, "acme", 5); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("stale clear: %v; want ErrFenced", err)
	}
	if err := s.SetLastSuccess(ctx, "acme", 5, runs.LastSuccess{RunID: old.RunID, FinishedAt: time.Now()}); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("stale last success: %v; want ErrFenced", err)
	}

	// The new holder continues the run.
	cur := old
	cur.Fence, cur.Holder, cur.Attempts = 6, "b", 2
	if err := s.SaveCheckpoint(ctx, runs.Checkpoint{Report: cur, DiffComplete: true}); err != nil {
		t.Fatal(err)
	}
	cp, err := s.Active(ctx, "acme")
	if err != nil || cp.Report.Holder != "b" || !cp.DiffComplete || cp.UpdatedAt.IsZero() {
		t.Fatalf("active = %+v, %v", cp, err)
	}
	cur.Status = runs.StatusSucceeded
	if err := s.SaveReport(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearCheckpoint(ctx, "acme", 6); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Active(ctx, "acme"); !errors.Is(err, runs.ErrNotFound) {
		t.Fatalf("active after clear: %v", err)
	}
	got, err := s.Report(ctx, "acme", old.RunID)
	if err != nil || got.Status != runs.StatusSucceeded || got.Fence != 6 {
		t.Fatalf("report = %+v, %v", got, err)
	}
}

func TestHistoryIsNewestFirst(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	if err := s.RaiseFence(ctx, "acme", 1, "", "a"); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 4, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 4 {
		id := runs.NewRunID(base.Add(time.Duration(i) * 24 * time.Hour))
		ids = append(ids, id)
		if err := s.SaveReport(ctx, runs.Report{RunID: id, Tenant: "acme", Fence: 1, Status: runs.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	// Another tenant's reports stay apart.
	if err := s.RaiseFence(ctx, "acme-eu", 1, "", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveReport(ctx, runs.Report{RunID: runs.NewRunID(base), Tenant: "acme-eu", Fence: 1}); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, "acme", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].RunID != ids[3] || h[2].RunID != ids[1] {
		t.Fatalf("history %v", h)
	}
	st, err := s.Status(ctx, "acme")
	if err != nil || st.Last == nil || st.Last.RunID != ids[3] || st.Active != nil || st.Fence != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if _, err := s.History(ctx, "bad.tenant", 0); err == nil {
		t.Fatal("a tenant id with a dot was accepted")
	}
}

func TestEachSlotIsClaimedOnce(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	slot := time.Date(2026, 11, 28, 20, 0, 0, 0, mustZone(t, "America/Los_Angeles"))
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ClaimSlot(ctx, "acme", slot, runs.NewRunID(time.Now()), string(rune('a'+i)))
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claimers won the slot; want exactly 1", wins.Load())
	}
	if ok, _ := s.ClaimSlot(ctx, "acme", slot.Add(-24*time.Hour), "x", "x"); ok {
		t.Fatal("an older slot was claimed after a newer one")
	}
	if ok, _ := s.ClaimSlot(ctx, "acme", slot.AddDate(0, 0, 1), "y", "y"); !ok {
		t.Fatal("the next day's slot was not claimable")
	}
	c, err := s.Slot(ctx, "acme")
	if err != nil || c.RunID != "y" {
		t.Fatalf("slot %+v %v", c, err)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestRunIDsSortByStartWithinOneSecond(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 20, 0, 0, 5e6, time.UTC)
	a, b := runs.NewRunID(t0), runs.NewRunID(t0.Add(3*time.Millisecond))
	if !(a < b) {
		t.Fatalf("run ids %s and %s started 3ms apart do not sort by start", a, b)
	}
}

func TestWatermarkIsFencedAndNeverMovesBack(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	if _, err := s.Watermark(ctx, "acme"); !errors.Is(err, runs.ErrNotFound) {
		t.Fatalf("no run yet: %v; want ErrNotFound", err)
	}
	if err := s.RaiseFence(ctx, "acme", 2, "r1", "a"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	w := runs.Watermark{RunID: "r1", Field: "HasOptedOutOfEmail", Salesforce: t0, LedgerSeq: 100, FullAt: t0, LedgerOptOuts: 7}
	if err := s.SetWatermark(ctx, "acme", 2, w); err != nil {
		t.Fatal(err)
	}
	// An older mark (a late writer) is ignored; a newer one is kept.
	older := w
	older.RunID, older.LedgerSeq = "r0", 90
	if err := s.SetWatermark(ctx, "acme", 2, older); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Watermark(ctx, "acme"); got.RunID != "r1" {
		t.Fatalf("an older watermark replaced a newer: %+v", got)
	}
	newer := w
	newer.RunID, newer.Salesforce, newer.LedgerSeq = "r2", t0.Add(time.Hour), 120
	if err := s.SetWatermark(ctx, "acme", 2, newer); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Watermark(ctx, "acme"); got.RunID != "r2" || got.LedgerSeq != 120 {
		t.Fatalf("watermark %+v; want r2's", got)
	}
	// A holder that lost its lease cannot move it.
	if err := s.RaiseFence(ctx, "acme", 3, "r3", "b"); err != nil {
		t.Fatal(err)
	}
	newer.RunID, newer.LedgerSeq = "stale", 200
	if err := s.SetWatermark(ctx, "acme", 2, newer); !errors.Is(err, runs.ErrFenced) {
		t.Fatalf("stale holder: %v; want ErrFenced", err)
	}
	if st, err := s.Status(ctx, "acme"); err != nil || st.Watermark == nil || st.Watermark.RunID != "r2" {
		t.Fatalf("status watermark %+v, %v", st.Watermark, err)
	}
}
