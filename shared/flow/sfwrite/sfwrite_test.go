package sfwrite_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
)

func TestParallelRunsEveryItemWithinItsWorkersAndReturnsTheFirstError(t *testing.T) {
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	var running, most, seen atomic.Int64
	boom := errors.New("boom")
	err := sfwrite.Parallel(context.Background(), 4, items, func(_ context.Context, i, it int) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if i != it {
			t.Errorf("item %d delivered as index %d", it, i)
		}
		seen.Add(1)
		if it == 42 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v; want the item's error", err)
	}
	if seen.Load() != 100 || most.Load() > 4 {
		t.Fatalf("%d items run, %d at most at once; want all 100, at most 4", seen.Load(), most.Load())
	}
}

func TestParallelStartsNoItemOnceItsContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := sfwrite.Parallel(ctx, 2, []int{1, 2, 3}, func(context.Context, int, int) error { ran = true; return nil })
	if ran || !errors.Is(err, context.Canceled) {
		t.Fatalf("ran %t err %v; want nothing run and the context's error", ran, err)
	}
}

func TestClaimOnlyForTheSalesField(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if c, d := sfwrite.Claim(optout.StandardField, now, time.Minute); c != nil || !d.IsZero() {
		t.Fatalf("Email Opt Out: claim %+v deadline %s; want none (only ever set, writers need not take turns)", c, d)
	}
	c, d := sfwrite.Claim("Sales_Opt_Out__c", now, 80*time.Second)
	if c == nil || !c.Until.Equal(now.Add(80*time.Second)) || !c.Deadline.Equal(now.Add(70*time.Second)) {
		t.Fatalf("sales field: claim %+v; want one until now+80s, its call given up at now+70s", c)
	}
	if left := time.Until(d); left > 70*time.Second || left <= 0 {
		t.Fatalf("call deadline in %s; want the claim's deadline on this process's clock (about 70s)", left)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sfwrite.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep: %v; want the context's error", err)
	}
	if err := sfwrite.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
}
