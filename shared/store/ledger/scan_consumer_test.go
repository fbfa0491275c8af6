package ledger_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// TestScanLeavesNoConsumerBehind: a replica resyncs every tenant it serves
// when it starts; a scan's consumer left to its inactive threshold (5
// min) made a thousand tenants fill the bucket's stream with the server's
// default limit of 1,000 consumers, refusing every later scan and watch.
func TestScanLeavesNoConsumerBehind(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("a1", optout.OptOut, t0, "sc-a", contact)); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{"acme", "nobody"} { // with entries, and without
		n := 0
		if err := l.Scan(ctx, tn, func(ledger.ScanItem) error { n++; return nil }, nil); err != nil {
			t.Fatal(err)
		}
		s, err := p.JS.Stream(ctx, "KV_"+p.Topology.LedgerBucket())
		if err != nil {
			t.Fatal(err)
		}
		if c := s.CachedInfo().State.Consumers; c != 0 {
			t.Errorf("after scanning %s (%d entries) the ledger's stream has %d consumers; want none left", tn, n, c)
		}
	}
}

// TestScanSinceSeesOnlyLaterChanges: an incremental run reads the ledger
// changes after a position: a person changed after it, one deleted after
// it (Gone), and not the persons left alone.
func TestScanSinceSeesOnlyLaterChanges(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	w := l.Writer("acme", std)
	for _, sc := range []string{"sc-a", "sc-b", "sc-c"} {
		if _, err := w.Ingest(ctx, ev("e-"+sc, optout.OptOut, t0, sc, "")); err != nil {
			t.Fatal(err)
		}
	}
	pos, err := l.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ingest(ctx, ev("e-b2", optout.Resubscribe, t0.Add(time.Hour), "sc-b", "")); err != nil {
		t.Fatal(err)
	}
	if err := p.Ledger.Delete(ctx, optout.Key("acme", "sc-c", "")); err != nil {
		t.Fatal(err)
	}
	var seen []string
	err = l.Scan(ctx, "acme", func(it ledger.ScanItem) error {
		s := it.Key
		if it.Gone {
			s += " gone"
		} else if !it.Entry.OptedOut {
			s += " resubscribed"
		}
		seen = append(seen, s)
		return nil
	}, nil, ledger.Since(pos))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{optout.Key("acme", "sc-b", "") + " resubscribed", optout.Key("acme", "sc-c", "") + " gone"}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("changes since %d: %v; want %v", pos, seen, want)
	}
}
