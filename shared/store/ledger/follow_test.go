package ledger_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// TestFollowReadsEveryTenantThenEveryChange: a Follower delivers the entries
// already stored (every tenant, the last value of each), then changes as
// they are stored, a merge as a retired entry; Current says when it has
// passed on everything stored before the call.
func TestFollowReadsEveryTenantThenEveryChange(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	for _, tn := range []string{"acme", "beta"} {
		w := l.Writer(tn, std)
		if _, err := w.Ingest(ctx, ev(tn+"1", optout.OptOut, t0, "sc-1", "")); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Ingest(ctx, ev(tn+"2", optout.Resubscribe, t0.Add(time.Hour), "sc-1", "")); err != nil {
			t.Fatal(err)
		}
	}
	f, err := l.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]ledger.Change{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- f.Run(rctx, func(c ledger.Change) {
			mu.Lock()
			got[c.Key] = c
			mu.Unlock()
		}, nil)
	}()
	current := func() {
		t.Helper()
		for {
			ok, err := f.Current(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	current()
	mu.Lock()
	for _, tn := range []string{"acme", "beta"} {
		c, ok := got[optout.Key(tn, "sc-1", "")]
		if !ok || c.Entry.OptedOut || c.Deleted {
			t.Errorf("%s: %+v, want the entry as last written (resubscribed)", tn, c)
		}
	}
	mu.Unlock()
	// A Salesforce-only person, then the event that links it to sc-2: the
	// first is retired into the second.
	w := l.Writer("acme", std)
	if _, err := w.Ingest(ctx, ev("a3", optout.OptOut, t0, "", contact)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ingest(ctx, ev("a4", optout.OptOut, t0, "sc-2", contact)); err != nil {
		t.Fatal(err)
	}
	current()
	mu.Lock()
	if c := got[optout.Key("acme", "", contact)]; c.Entry.MergedInto != optout.Key("acme", "sc-2", "") {
		t.Errorf("the Salesforce-only entry: %+v, want retired into sc-2", c.Entry)
	}
	if c := got[optout.Key("acme", "sc-2", "")]; !c.Entry.OptedOut || c.Entry.SalesforceID != contact {
		t.Errorf("sc-2: %+v", c.Entry)
	}
	mu.Unlock()
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
}
