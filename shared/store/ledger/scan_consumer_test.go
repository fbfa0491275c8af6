package ledger_test

import (
	"testing"

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
