package diff_test

import (
	"testing"

	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

func TestPreviewListsChangesNotConfirmations(t *testing.T) {
	id := func(s string) idset.ID {
		k, err := idset.Parse(s)
		if err != nil {
			t.Fatalf("id %s: %v", s, err)
		}
		return k
	}
	p := diff.Plan{
		SFWrites: []diff.SFWrite{{ID: id("003RO0000035WQgYAM"), Key: "acme.sc.a", Why: diff.SalesConnectOnly}, {ID: id("003RO0000035WQhYAM"), Why: diff.WrittenBack}},
		LedgerOps: []diff.LedgerOp{{Kind: diff.Confirm, ID: id("003RO0000035WQiYAM")}, {Kind: diff.ApplyOptOut, ID: id("00QRO0000035WQg")},
			{Kind: diff.ApplyResubscribe, ID: id("00QRO0000035WQh")}},
	}
	all := p.Preview(0)
	if all.Total != 4 || len(all.Changes) != 4 {
		t.Fatalf("preview %+v; want the 4 changes, no confirmation", all)
	}
	if c := all.Changes[0]; c.Side != runs.ChangeSalesforce || c.SalesforceID != "003RO0000035WQgYAM" || c.What != "sales-connect-only" || c.Key != "acme.sc.a" {
		t.Errorf("first change %+v", c)
	}
	if c := all.Changes[2]; c.Side != runs.ChangeSalesConnect || c.What != "apply-opt-out" {
		t.Errorf("third change %+v; want the first Sales Connect change after the Salesforce writes", c)
	}
	if cut := p.Preview(3); cut.Total != 4 || len(cut.Changes) != 3 {
		t.Errorf("limited preview %+v; want 3 of 4", cut)
	}
}
