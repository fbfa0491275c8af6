package engine_test

import (
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestEveryClassOfTheDiffBothDirections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sales  bool
		policy string
		bulk   bool // auto mode with a threshold below the set: Bulk API 2.0
	}{
		{"email-field/optout-wins", false, tenant.PolicyOptOutWins, false},
		{"email-field/latest-wins", false, tenant.PolicyLatestWins, false},
		{"sales-field/optout-wins", true, tenant.PolicyOptOutWins, false},
		{"sales-field/latest-wins/bulk", true, tenant.PolicyLatestWins, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "acme")
			s := h.Seed("acme", tc.sales, tc.policy)
			o := recontest.ReplicaOpts{Name: "replica-a"}
			if tc.bulk {
				o.Cfg = func(c *engine.Config) { c.Read.BulkThreshold = 0 }
			}
			svc := h.replica(o)

			rep := h.runNow(svc, "acme", false)
			if rep.Status != runs.StatusSucceeded || rep.DryRun || rep.Attempts != 1 {
				t.Fatalf("report: status %s (%s), attempts %d", rep.Status, rep.Reason, rep.Attempts)
			}
			if rep.Counts != s.WantCounts() {
				t.Fatalf("counts\n got %+v\nwant %+v", rep.Counts, s.WantCounts())
			}
			s.CheckFinal()

			// Writes: 4 records set true under optout-wins (Sales Connect only
			// ×2, the written-back resubscribe, the field cleared before the
			// opt-out), 3 under latest-wins; in one Collections call.
			wantSF := int64(4)
			if tc.policy == tenant.PolicyLatestWins {
				wantSF = 3
			}
			w := rep.Writes
			if w.SalesforceWritten != wantSF || w.PlannedSalesforce != wantSF || w.SalesforceFailed != 0 || w.Remaining != 0 {
				t.Errorf("Salesforce writes %+v; want %d", w, wantSF)
			}
			if n := h.SFWrites("acme", "replica-a"); n != 1 {
				t.Errorf("%d Collections calls; want 1 (200 records a call)", n)
			}
			if w.EventsPublished != int64(len(wantAppliedIDs(s))) {
				t.Errorf("events published %d; want %d", w.EventsPublished, len(wantAppliedIDs(s)))
			}
			// API: limits 1, describe 2 (Contact, Lead), one SOQL page per object, one lookup
			// query for the confirmed opt-outs missing from the set, one write.
			// Over the threshold, each object costs its SOQL probe (one page),
			// then a Bulk job: create, polls until complete, one results page.
			a := rep.API
			wantPath := "soql"
			if tc.bulk {
				wantPath = "bulk"
				if a.Reads < 2+2*3 || a.Lookups != 1 || a.Writes != 1 || a.Spent != 3+a.Reads+2 || a.Pages != 4 {
					t.Errorf("API use %+v", a)
				}
			} else if a.Spent != 7 || a.Reads != 2 || a.Lookups != 1 || a.Writes != 1 || a.Pages != 2 || a.Spent > a.Budget {
				t.Errorf("API use %+v", a)
			}
			if a.ReadPath["Contact"] != wantPath || a.ReadPath["Lead"] != wantPath {
				t.Errorf("read paths %v; want %s", a.ReadPath, wantPath)
			}

			checkTrace(t, h, rep)
			checkMetrics(t, h)
			checkReportEvent(t, h, rep)
			if _, err := h.Store.Active(h.Ctx, "acme"); err == nil {
				t.Error("the checkpoint is still there after a finished run")
			}
			if last, err := h.Store.LastSuccess(h.Ctx, "acme"); err != nil || last.RunID != rep.RunID {
				t.Errorf("last success %+v, %v", last, err)
			}

			// A second run finds both sides agreeing and writes nothing.
			again := h.runNow(svc, "acme", false)
			if again.Writes.SalesforceWritten != 0 || again.Writes.LedgerWritten != 0 || again.Writes.EventsPublished != 0 ||
				again.Counts.SalesConnectOnly != 0 || again.Counts.SalesforceOnly != 0 || again.Counts.KnownToSalesforceOnly != 0 {
				t.Errorf("second run still changed things: %+v %+v", again.Writes, again.Counts)
			}
			s.CheckFinal()
		})
	}
}

// wantAppliedIDs lists the persons announced to Sales Connect.
func wantAppliedIDs(s *recontest.Scenario) []string {
	out := []string{s.IDs["sfonly"], s.IDs["known"]}
	if s.Policy == tenant.PolicyLatestWins {
		out = append(out, s.IDs["sfresub"])
	}
	return out
}

// checkTrace: one trace per run, rooted at reconcile.run, with a span per
// page and per write batch; applied events carry that trace.
func checkTrace(t *testing.T, h *harness, rep runs.Report) {
	t.Helper()
	spans := h.Tel.Exporter.GetSpans()
	var root trace.SpanContext
	for _, sp := range spans {
		if sp.Name == "reconcile.run" && sp.SpanContext.TraceID().String() == rep.TraceID {
			root = sp.SpanContext
			if sp.Parent.IsValid() {
				t.Error("reconcile.run has a parent; a run is its own trace")
			}
		}
	}
	if !root.IsValid() {
		t.Fatalf("no reconcile.run span with the report's trace id %s", rep.TraceID)
	}
	count := map[string]int{}
	for _, sp := range spans {
		if sp.SpanContext.TraceID() == root.TraceID() {
			count[sp.Name]++
		}
	}
	for name, min := range map[string]int{"reconcile.read_page": 2, "reconcile.write_salesforce_batch": 1,
		"reconcile.write_ledger_batch": 1, "reconcile.read_ledger": 1, "reconcile.lookup": 1, "PATCH /composite/sobjects": 1} {
		if count[name] < min {
			t.Errorf("trace has %d %q spans; want at least %d (spans: %v)", count[name], name, min, count)
		}
	}
	_, hdrs := h.AppliedEvents(rep.Tenant)
	for _, hd := range hdrs {
		ctx := telemetry.Extract(context.Background(), hd)
		if sc := trace.SpanContextFromContext(ctx); sc.TraceID() != root.TraceID() {
			t.Errorf("applied event carries trace %s; want the run's %s", sc.TraceID(), root.TraceID())
		}
		if hd.Get(engine.HeaderRun) != rep.RunID {
			t.Errorf("applied event header %s = %q", engine.HeaderRun, hd.Get(engine.HeaderRun))
		}
	}
}

func checkMetrics(t *testing.T, h *harness) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.Tel.MetricReader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			seen[m.Name] = true
		}
	}
	for _, name := range []string{"optout_reconcile_run_duration_seconds", "optout_reconcile_records",
		"optout_reconcile_last_success_timestamp_seconds", "optout_reconcile_runs", "optout_reconcile_writes"} {
		if !seen[name] {
			t.Errorf("metric %s not recorded", name)
		}
	}
}

func checkReportEvent(t *testing.T, h *harness, rep runs.Report) {
	t.Helper()
	s, err := h.Prov.JS.Stream(h.Ctx, h.Topo.RunsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(h.Ctx, h.Topo.RunsSubject(rep.Tenant))
	if err != nil {
		t.Fatalf("no run report event: %v", err)
	}
	var got runs.Report
	if err := json.Unmarshal(m.Data, &got); err != nil || got.RunID != rep.RunID || got.Status != rep.Status {
		t.Fatalf("report event %s: %v", m.Data, err)
	}
}
