package kv_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// counter returns an update that adds one to a decimal value, and counts
// its calls.
func counter(calls *int) func(kv.Current) ([]byte, bool, error) {
	return func(c kv.Current) ([]byte, bool, error) {
		*calls++
		n := 0
		if c.Exists {
			n, _ = strconv.Atoi(string(c.Value))
		}
		return []byte(strconv.Itoa(n + 1)), true, nil
	}
}

func TestUpdateNeverLosesAConcurrentWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := natstest.Provision(t, natstest.Connect(t)).Ledger
	calls := 0
	if _, err := kv.Update(ctx, b, "k", counter(&calls)); err != nil {
		t.Fatal(err)
	}
	// A value passed with From that another writer has since moved: the
	// compare-and-set refuses it and the update reads and goes again.
	stale := kv.Current{Value: []byte("1"), Rev: 1, Exists: true}
	if _, err := b.Put(ctx, "k", []byte("5")); err != nil {
		t.Fatal(err)
	}
	calls = 0
	r, err := kv.Update(ctx, b, "k", counter(&calls), kv.From(stale))
	if err != nil || !r.Wrote || string(r.Value) != "6" || calls != 2 {
		t.Fatalf("update from a stale value: %q wrote %t after %d calls, %v; want 6 written on the second call", r.Value, r.Wrote, calls, err)
	}
	e, err := b.Get(ctx, "k")
	if err != nil || string(e.Value()) != "6" || e.Revision() != r.Rev {
		t.Fatalf("stored %v; want 6 at revision %d", err, r.Rev)
	}
}

func TestUpdateRereadsWhenAskedAndReturnsItsFunctionsError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := natstest.Provision(t, natstest.Connect(t)).Ledger
	if _, err := b.Put(ctx, "k", []byte("stored")); err != nil {
		t.Fatal(err)
	}
	var seen []string
	r, err := kv.Update(ctx, b, "k", func(c kv.Current) ([]byte, bool, error) {
		seen = append(seen, string(c.Value))
		if c.Passed {
			return nil, false, kv.ErrReread
		}
		return nil, false, nil
	}, kv.From(kv.Current{Value: []byte("passed"), Rev: 1, Exists: true}))
	if err != nil || r.Wrote || len(seen) != 2 || seen[1] != "stored" {
		t.Fatalf("seen %q wrote %t %v; want the passed value, then the stored one, and no write", seen, r.Wrote, err)
	}
	boom := errors.New("boom")
	if _, err := kv.Update(ctx, b, "k", func(kv.Current) ([]byte, bool, error) { return nil, false, boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v; want the function's own", err)
	}
	if _, ok, err := kv.Put(ctx, b, "new", []byte("x"), kv.Current{}); !ok || err != nil {
		t.Fatalf("create: %t %v", ok, err)
	}
	if _, ok, err := kv.Put(ctx, b, "new", []byte("y"), kv.Current{}); ok || err != nil {
		t.Fatalf("second create: %t %v; want a lost compare-and-set, not an error", ok, err)
	}
}
