package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
)

func newLocker(t *testing.T, prefix string, ttl time.Duration) *lock.Locker {
	t.Helper()
	l, err := lock.New(locktest.Client(t), lock.Options{Prefix: prefix, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitDone waits for a lease's context to end; the deadline only bounds a
// broken watchdog, it is not what the test measures.
func waitDone(t *testing.T, ls *lock.Lease) {
	t.Helper()
	select {
	case <-ls.Context().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("lease context still alive: the watchdog did not notice")
	}
}

func TestLeaseIsExclusiveAndFencesGrow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := locktest.Prefix(t)
	a, b := newLocker(t, prefix, 10*time.Second), newLocker(t, prefix, 10*time.Second)

	first, err := a.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryAcquire(ctx, "acme"); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("second owner got %v; want ErrNotAcquired while the lease is held", err)
	}
	// Another name is independent.
	other, err := b.TryAcquire(ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release(ctx)
	if held, ttl, err := a.Held(ctx, "acme"); err != nil || !held || ttl <= 0 {
		t.Fatalf("Held = %v %v %v; want held with a ttl", held, ttl, err)
	}

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(first.Err(), lock.ErrReleased) || first.Valid() {
		t.Fatalf("released lease: Err=%v Valid=%v", first.Err(), first.Valid())
	}
	second, err := b.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	defer second.Release(ctx)
	if second.Fence() <= first.Fence() {
		t.Fatalf("fence %d after %d; every grant must carry a larger fence", second.Fence(), first.Fence())
	}
	if f, err := a.Fence(ctx, "acme"); err != nil || f != second.Fence() {
		t.Fatalf("Fence = %d, %v; want %d", f, err, second.Fence())
	}
	if !second.Valid() {
		t.Fatal("fresh lease not valid")
	}
}

func TestMinFenceSurvivesALostCounter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLocker(t, locktest.Prefix(t), 10*time.Second)
	ls, err := l.TryAcquire(ctx, "acme", lock.MinFence(41))
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Release(ctx)
	if ls.Fence() != 42 {
		t.Fatalf("fence %d; want 42, one above the floor the store reported", ls.Fence())
	}
}

func TestDeletedLeaseCancelsTheHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := locktest.Prefix(t)
	rdb := locktest.Client(t)
	l, err := lock.New(rdb, lock.Options{Prefix: prefix, TTL: 3 * time.Second, RenewEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := l.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, prefix+"{acme}:lease").Err(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, ls)
	if !errors.Is(ls.Err(), lock.ErrLost) || ls.Valid() {
		t.Fatalf("Err = %v, Valid = %v; want ErrLost and invalid", ls.Err(), ls.Valid())
	}
}

func TestTakenOverLeaseIsNotReleasedByTheOldHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := locktest.Prefix(t)
	rdb := locktest.Client(t)
	old, err := lock.New(rdb, lock.Options{Prefix: prefix, TTL: 3 * time.Second, RenewEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := old.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	// The lease expires under the old holder (simulated by deleting it) and
	// a new owner takes it before the old watchdog looks.
	if err := rdb.Del(ctx, prefix+"{acme}:lease").Err(); err != nil {
		t.Fatal(err)
	}
	fresh, err := newLocker(t, prefix, 10*time.Second).TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Release(ctx)
	waitDone(t, stale)
	if err := stale.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := old.Held(ctx, "acme"); !held || fresh.Err() != nil {
		t.Fatal("the stale holder's release removed the new owner's lease")
	}
	if fresh.Fence() <= stale.Fence() {
		t.Fatalf("new fence %d not above the stale %d", fresh.Fence(), stale.Fence())
	}
}

func TestUnreachableRedisCancelsTheHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := locktest.Client(t)
	l, err := lock.New(rdb, lock.Options{Prefix: locktest.Prefix(t), TTL: 3 * time.Second, RenewEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := l.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	_ = rdb.Close() // every renewal now fails
	waitDone(t, ls)
	if !errors.Is(ls.Err(), lock.ErrLost) {
		t.Fatalf("Err = %v; want ErrLost", ls.Err())
	}
}

func TestRenewalKeepsTheLeasePastItsTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := locktest.Prefix(t)
	l := newLocker(t, prefix, time.Second)
	ls, err := l.TryAcquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Release(ctx)
	// Hold it for over two TTLs: without renewals it would have expired.
	// (A renewal is due every third of the TTL, so only a stall of two
	// thirds of it could lose the lease legitimately.)
	end := time.Now().Add(2200 * time.Millisecond)
	for time.Now().Before(end) {
		if ls.Err() != nil {
			t.Fatalf("lease lost while renewed: %v", ls.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := newLocker(t, prefix, time.Second).TryAcquire(ctx, "acme"); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("another owner got %v; the renewed lease must still be held", err)
	}
}

func TestOptionsAreValidated(t *testing.T) {
	t.Parallel()
	rdb := locktest.Client(t)
	if _, err := lock.New(rdb, lock.Options{TTL: time.Second, RenewEvery: time.Second}); err == nil {
		t.Fatal("renew period equal to the ttl accepted")
	}
	if _, err := lock.New(nil, lock.Options{}); err == nil {
		t.Fatal("nil client accepted")
	}
}
