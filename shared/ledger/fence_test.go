package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

func TestFencedUpdateRefusesAnOlderFence(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := natstest.Provision(t, natstest.Connect(t))
	l := &ledger.Ledger{KV: p.Ledger, JS: p.JS, AuditSubject: p.Topology.AuditSubject}
	key := ledger.Key("acme", "", "003RO0000035WQgYAM")
	set := func(reason string) func(*ledger.Entry, bool) (bool, error) {
		return func(e *ledger.Entry, _ bool) (bool, error) {
			e.Tenant, e.Reason, e.OptedOut = "acme", reason, true
			return true, nil
		}
	}

	if _, err := l.FencedUpdate(ctx, key, 7, set("holder 7")); err != nil {
		t.Fatal(err)
	}
	// A newer holder writes; from then on the old one is refused.
	if _, err := l.FencedUpdate(ctx, key, 8, set("holder 8")); err != nil {
		t.Fatal(err)
	}
	_, err := l.FencedUpdate(ctx, key, 7, set("stale holder 7"))
	if !errors.Is(err, ledger.ErrFenced) {
		t.Fatalf("stale write: %v; want ErrFenced", err)
	}
	e, fence, _, err := l.GetFenced(ctx, key)
	if err != nil || fence != 8 || e.Reason != "holder 8" {
		t.Fatalf("entry %+v fence %d err %v; want holder 8's write kept", e, fence, err)
	}
	// An equal fence (the same holder) may write again.
	if _, err := l.FencedUpdate(ctx, key, 8, set("holder 8 again")); err != nil {
		t.Fatal(err)
	}

	// A non-fenced writer (the pusher) resets the fence; its write is kept
	// and the reconciler's next write still goes through compare-and-set.
	if _, err := l.Update(ctx, key, func(e *ledger.Entry, _ bool) (bool, error) { e.Reason = "pusher"; return true, nil }); err != nil {
		t.Fatal(err)
	}
	if _, fence, _, _ := l.GetFenced(ctx, key); fence != 0 {
		t.Fatalf("fence after a pusher write = %d; want 0", fence)
	}
	plain, _, err := l.Get(ctx, key)
	if err != nil || plain.Reason != "pusher" || !plain.OptedOut {
		t.Fatalf("pusher view %+v %v", plain, err)
	}
}

func TestScanStreamsOneTenant(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pull := range []bool{true, false} {
		t.Run(map[bool]string{true: "pull", false: "watch"}[pull], func(t *testing.T) {
			p := natstest.Provision(t, natstest.Connect(t))
			l := &ledger.Ledger{KV: p.Ledger}
			if pull {
				l.JS = p.JS
			}
			scanOneTenant(t, ctx, l, p)
		})
	}
}

func scanOneTenant(t *testing.T, ctx context.Context, l *ledger.Ledger, p *natsx.Provisioned) {
	// Empty tenant: the scan ends at once.
	n := 0
	if err := l.Scan(ctx, "acme", func(ledger.ScanItem) error { n++; return nil }, nil); err != nil || n != 0 {
		t.Fatalf("empty scan: %d entries, %v", n, err)
	}

	var want []string
	for i := range 300 {
		key := ledger.Key("acme", fmt.Sprintf("sc-%d", i), "")
		want = append(want, key)
		if _, err := l.FencedUpdate(ctx, key, 3, func(e *ledger.Entry, _ bool) (bool, error) {
			e.Tenant, e.OptedOut = "acme", i%2 == 0
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Another tenant, a deleted entry and a corrupt value are not delivered.
	if _, err := p.Ledger.Put(ctx, ledger.Key("acmeco", "sc-x", ""), []byte(`{"tenant":"acmeco"}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Ledger.Delete(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	if _, err := p.Ledger.Put(ctx, "acme.sc.corrupt", []byte(`{not json`)); err != nil {
		t.Fatal(err)
	}

	var got, bad []string
	err := l.Scan(ctx, "acme", func(it ledger.ScanItem) error {
		if it.Fence != 3 || it.Entry.Tenant != "acme" || it.Revision == 0 {
			return fmt.Errorf("item %+v", it)
		}
		got = append(got, it.Key)
		return nil
	}, func(key string, _ error) { bad = append(bad, key) })
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scan delivered %d keys; want %d", len(got), len(want))
	}
	if len(bad) != 1 || bad[0] != "acme.sc.corrupt" {
		t.Fatalf("bad = %v", bad)
	}

	stop := errors.New("stop")
	if err := l.Scan(ctx, "acme", func(ledger.ScanItem) error { return stop }, nil); !errors.Is(err, stop) {
		t.Fatalf("scan error %v; want fn's error", err)
	}
}
