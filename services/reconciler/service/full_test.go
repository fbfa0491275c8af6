package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// A control request with "full" (optoutctl reconcile run --full; the CDC
// subscriber after an overflow or a lost position) runs a full scan where
// the run would otherwise be incremental, and the report says why.
func TestControlRequestForAFullScan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	clock := &recontest.FakeClock{}
	clock.Set(time.Now())
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})
	serve(h, svc, clock, "acme")

	run := func(req runs.ControlRequest) runs.Report {
		t.Helper()
		var rep runs.ControlReply
		var err error
		// The previous run reports before it lets the tenant go.
		h.Eventually("the request accepted", func() bool {
			rep, err = runs.Request(h.Ctx, h.NC, h.Topo, "acme", req)
			return err != nil || rep.Code != runs.CodeBusy
		})
		if err != nil || !rep.Accepted {
			t.Fatalf("request %+v: %+v, %v", req, rep, err)
		}
		return h.WaitFinal("acme", rep.RunID)
	}
	if rep := run(runs.ControlRequest{By: "test"}); rep.Scan == nil || rep.Scan.Kind != runs.ScanFull {
		t.Fatalf("first run: %+v", rep.Scan)
	}
	if rep := run(runs.ControlRequest{By: "test"}); rep.Scan == nil || rep.Scan.Kind != runs.ScanIncremental {
		t.Fatalf("second run: %+v; want incremental", rep.Scan)
	}
	for _, by := range []string{"optoutctl:ops", "cdc:events", "cdc:replay-lost"} {
		rep := run(runs.ControlRequest{By: by, Full: true})
		if rep.Status != runs.StatusSucceeded || rep.Scan == nil || rep.Scan.Kind != runs.ScanFull || !strings.Contains(rep.Scan.Why, "requested by "+by) {
			t.Fatalf("full request by %s: %s (%s), scan %+v", by, rep.Status, rep.Reason, rep.Scan)
		}
	}
}
