package engine_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// A replica killed in the middle of a batch (some of its writes made, none
// counted) and another resuming the run: the report counts every write
// once, across attempts, so written + failed + remaining = planned on both
// sides and every change has its event; while the run waits to be resumed
// its progress names the batch that was in flight rather than showing
// fewer writes than were made.
func TestKilledMidBatchCountsAddUpAcrossAttempts(t *testing.T) {
	t.Parallel()
	for _, at := range []struct {
		point string
		n     int
	}{
		{"before-ledger-write", 2}, {"before-applied", 2}, {"after-sf-call", 1},
	} {
		t.Run(fmt.Sprintf("%s#%d", at.point, at.n), func(t *testing.T) {
			t.Parallel()
			h, s, b, started := killedRun(t, at.point, at.n)
			cp, err := h.Store.Active(h.Ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if p := runview.Progress(cp); !strings.Contains(p, "a batch of 2") || !strings.Contains(p, "in flight, not yet counted") {
				t.Errorf("progress while the run waits to be resumed: %q; want the batch in flight named", p)
			}

			rep := takeOver(h, b, "acme", started)
			if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 {
				t.Fatalf("resumed run: %s (%s), attempts %d", rep.Status, rep.Reason, rep.Attempts)
			}
			w := rep.Writes
			if w.SalesforceWritten+w.SalesforceFailed+w.Remaining != w.PlannedSalesforce || w.PlannedSalesforce != 4 {
				t.Errorf("Salesforce: written %d + failed %d + remaining %d != planned %d (want 4)", w.SalesforceWritten, w.SalesforceFailed, w.Remaining, w.PlannedSalesforce)
			}
			changes, planned := w.LedgerWritten-w.LedgerConfirmations, w.PlannedSalesConnect-w.PlannedConfirmations
			if changes+w.LedgerFailed != planned || planned != 2 || w.EventsPublished != changes {
				t.Errorf("Sales Connect: %d changes + %d failed of %d planned (want 2), %d events; want them to add up: %+v", changes, w.LedgerFailed, planned, w.EventsPublished, w)
			}
			want := "Salesforce: 4 set, 0 failed; Sales Connect: 2 changes (2 events), 0 failed"
			if got := runview.Written(rep); !strings.HasPrefix(got, want) {
				t.Errorf("report says %q; want it to start %q", got, want)
			}
			if at.point != "after-sf-call" {
				// After a kill between the call and its record, the
				// state machine takes our own mark for someone else's
				// (setByUs false): a gap of optout.Observed, not of the
				// counts, left to its own change.
				s.CheckFinal()
			}
		})
	}
}
