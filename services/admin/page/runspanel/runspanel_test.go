package runspanel_test

import (
	"bytes"
	"context"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page/runspanel"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

var (
	inline = regexp.MustCompile(`</?strong>`)
	tags   = regexp.MustCompile(`<[^>]+>`)
)

// text is what a reader sees: the page without its markup.
func text(s string) string {
	s = inline.ReplaceAllString(s, "")
	return strings.Join(strings.Fields(html.UnescapeString(tags.ReplaceAllString(s, " "))), " ")
}

// TestPanelShowsReportsAndProgress renders the panel from a real runs
// bucket holding a finished run, a dry run and a running run.
func TestPanelShowsReportsAndProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := natstest.Provision(t, natstest.Connect(t))
	store := runs.Store{KV: prov.Runs}
	p := runspanel.Panel{Runs: store}

	var b bytes.Buffer
	if err := p.Render(ctx, &b, "acme"); err != nil {
		t.Fatal(err)
	}
	if got := text(b.String()); !strings.Contains(got, "No runs yet.") {
		t.Errorf("empty panel: %q", got)
	}

	if err := store.RaiseFence(ctx, "acme", 1, "r1", "replica-a"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	save := func(r runs.Report) {
		t.Helper()
		r.Tenant, r.Fence, r.Holder, r.Attempts = "acme", 1, "replica-a", 1
		if err := store.SaveReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	save(runs.Report{RunID: "20260302T020000Z-aaaaaa", Status: runs.StatusStoppedBudget, Reason: "API budget of 200 requests spent",
		Trigger: runs.Trigger{Kind: runs.TriggerSchedule, Slot: t0}, StartedAt: t0, FinishedAt: t0.Add(95 * time.Second), DurationSeconds: 95,
		Counts: runs.Counts{SalesforceOptOuts: 40, LedgerEntries: 60, LedgerOptOuts: 52, InBoth: 38, Unconfirmed: 3, SalesConnectOnly: 12, SalesforceOnly: 1, KnownToSalesforceOnly: 1},
		Writes: runs.Writes{PlannedSalesforce: 12, PlannedSalesConnect: 5, PlannedConfirmations: 3, SalesforceWritten: 7, SalesforceFailed: 1,
			LedgerWritten: 5, LedgerConfirmations: 3, EventsPublished: 2, Remaining: 4},
		API: runs.API{Spent: 200, Budget: 200}})
	save(runs.Report{RunID: "20260302T010000Z-dddddd", Status: runs.StatusStoppedBudget, Reason: "API budget of 4 requests spent", NotCompared: true,
		Trigger: runs.Trigger{Kind: runs.TriggerSchedule, Slot: t0.Add(-time.Hour)}, StartedAt: t0.Add(-time.Hour), FinishedAt: t0.Add(-time.Hour + 5*time.Second), DurationSeconds: 5,
		API: runs.API{Spent: 4, Budget: 4}})
	save(runs.Report{RunID: "20260302T030000Z-bbbbbb", Status: runs.StatusSucceeded, DryRun: true,
		Trigger: runs.Trigger{Kind: runs.TriggerManual, By: "optoutctl:ops"}, StartedAt: t0.Add(time.Hour), FinishedAt: t0.Add(time.Hour + 3*time.Second), DurationSeconds: 3,
		Writes: runs.Writes{PlannedSalesforce: 4, PlannedSalesConnect: 1}, API: runs.API{Spent: 6, Budget: 190}})
	running := runs.Report{RunID: "20260302T040000Z-cccccc", Status: runs.StatusRunning, Phase: runs.PhaseWritingSalesforce,
		Trigger: runs.Trigger{Kind: runs.TriggerManual, By: "admin-page:jdoe"}, StartedAt: t0.Add(2 * time.Hour),
		Writes: runs.Writes{PlannedSalesforce: 4, SalesforceWritten: 1}, API: runs.API{Spent: 9, Budget: 180}}
	save(running)
	running.Tenant, running.Fence = "acme", 1
	if err := store.SaveCheckpoint(ctx, runs.Checkpoint{Report: running, DiffComplete: true}); err != nil {
		t.Fatal(err)
	}

	b.Reset()
	if err := p.Render(ctx, &b, "acme"); err != nil {
		t.Fatal(err)
	}
	got := text(b.String())
	for _, want := range []string{
		"Running now: a run (started by admin-page:jdoe), started 2026-03-02 04:00:00 UTC, writing salesforce.",
		"step 6/6 writing salesforce; Salesforce 1 of 4 records set, Sales Connect 0 of 0 changes made; API 9/180.",
		"Started Run Result People compared Changes API requests",
		"2026-03-02 03:00:00 UTC dry run, started by optoutctl:ops, took 3s succeeded",
		"Would make: Salesforce: 4 records to set; Sales Connect: 1 changes (each with an event), 0 confirmations to record 6 of a budget of 190",
		// A total and its parts: 2 only in Salesforce, 1 of them known to the ledger, 1 new to it.
		"2026-03-02 02:00:00 UTC run, scheduled, took 1m stopped: API budget spent: API budget of 200 requests spent 40 opted out in Salesforce; ledger: 60 people, 52 opted out. " +
			"opted out on both sides 38 (of which 3 confirmations to record); only in Sales Connect 12; only in Salesforce 2 (1 known to the ledger, 1 new to it)",
		// Confirmations are not changes.
		"Salesforce: 7 set, 1 failed; Sales Connect: 2 changes (2 events), 0 failed, 3 confirmations recorded; remaining 4 200 of a budget of 200",
		// A run that could not compare says so, not "0 remain".
		"2026-03-02 01:00:00 UTC run, scheduled, took 5s stopped: API budget spent: API budget of 4 requests spent 0 opted out in Salesforce; ledger: 0 people, 0 opted out (read before the run stopped). not compared: the run stopped before it had read both sides",
		"remaining not known (not compared) 4 of a budget of 4",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("panel lacks %q\ngot: %s", want, got)
		}
	}
	if strings.Contains(got, "cccccc") || strings.Count(got, "2026-03-02 04:00:00 UTC") != 1 {
		t.Errorf("the running run is listed twice: %s", got)
	}
	if p.ID() != "nightly-runs" || p.Heading() != "Last nightly runs" {
		t.Errorf("id %q heading %q", p.ID(), p.Heading())
	}
}

// A tenant whose sync was just turned on has no run yet: the panel says
// when the first will be (the next slot, by the reconciler's rule) and how
// to have one now.
func TestPanelSaysWhenTheNextRunIs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := natstest.Provision(t, natstest.Connect(t))
	la, err := time.LoadLocation(tenant.DefaultZone)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 10, 9, 0, 0, 0, la)
	settings := tenant.Store{KV: prov.Tenants, Now: func() time.Time { return now }}
	p := runspanel.Panel{Runs: runs.Store{KV: prov.Runs}, Settings: settings, Now: func() time.Time { return now }}

	render := func() string {
		t.Helper()
		var b bytes.Buffer
		if err := p.Render(ctx, &b, "acme"); err != nil {
			t.Fatal(err)
		}
		return text(b.String())
	}
	if got := render(); !strings.Contains(got, "Next run: none: sync with Salesforce is off.") {
		t.Errorf("sync off: %s", got)
	}
	if _, _, err := settings.Update(ctx, "acme", func(s *tenant.Settings) error { s.SyncEnabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	want := "Next run: 2026-03-11 03:00:00 UTC (20:00 America/Los_Angeles), the first since sync was turned on at 2026-03-10 16:00:00 UTC; to have one now, use Run now (or 'optoutctl reconcile run acme')."
	if got := render(); !strings.Contains(got, want) {
		t.Errorf("panel lacks %q\ngot: %s", want, got)
	}
}

// TestPanelShowsTheCDCStream: a tenant whose stream fell back to the
// nightly run shows why, above its runs.
func TestPanelShowsTheCDCStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := natstest.Provision(t, natstest.Connect(t))
	store := runs.Store{KV: prov.Runs}
	if _, err := store.UpdateCDC(ctx, "acme", 1, func(c *runs.CDC) bool {
		c.State, c.Since = runs.CDCFallback, time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
		c.Reason = "Change Data Capture is not enabled for this org on /data/ChangeEvents; the nightly run keeps Salesforce-side changes in step meanwhile"
		return true
	}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := (runspanel.Panel{Runs: store}).Render(ctx, &b, "acme"); err != nil {
		t.Fatal(err)
	}
	got := text(b.String())
	for _, want := range []string{"Near real time (Change Data Capture): off since 2026-03-02", "not enabled for this org", "the nightly run keeps"} {
		if !strings.Contains(got, want) {
			t.Errorf("panel lacks %q: %q", want, got)
		}
	}
}

// TestRunsLinkToTheirTraceInJaeger: with the Jaeger UI's URL configured,
// each run links to its trace there; without it, none does.
func TestRunsLinkToTheirTraceInJaeger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := natstest.Provision(t, natstest.Connect(t))
	store := runs.Store{KV: prov.Runs}
	if err := store.RaiseFence(ctx, "acme", 1, "r1", "replica-a"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	if err := store.SaveReport(ctx, runs.Report{RunID: "20260302T020000Z-aaaaaa", Tenant: "acme", Fence: 1, Holder: "replica-a", Attempts: 1,
		Status: runs.StatusSucceeded, Trigger: runs.Trigger{Kind: runs.TriggerSchedule, Slot: t0}, StartedAt: t0, FinishedAt: t0.Add(time.Minute),
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}); err != nil {
		t.Fatal(err)
	}
	render := func(p runspanel.Panel) string {
		t.Helper()
		var b bytes.Buffer
		if err := p.Render(ctx, &b, "acme"); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	got := render(runspanel.Panel{Runs: store, JaegerURL: "https://jaeger.example.com/"})
	if !strings.Contains(got, `<a href="https://jaeger.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736">its trace</a>`) {
		t.Errorf("no link to the run's trace:\n%s", got)
	}
	if got := render(runspanel.Panel{Runs: store}); strings.Contains(got, "its trace") {
		t.Errorf("a trace link without a Jaeger URL:\n%s", got)
	}
}

// TestADryRunListsTheChangesItWouldMake: a dry run's report lists, record
// by record, what a run would change, in the words optoutctl prints.
func TestADryRunListsTheChangesItWouldMake(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := natstest.Provision(t, natstest.Connect(t))
	store := runs.Store{KV: prov.Runs}
	if err := store.RaiseFence(ctx, "acme", 1, "r1", "replica-a"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	if err := store.SaveReport(ctx, runs.Report{RunID: "20260302T020000Z-dddddd", Tenant: "acme", Fence: 1, Holder: "replica-a", Attempts: 1,
		DryRun: true, Status: runs.StatusSucceeded, Field: "HasOptedOutOfEmail", Trigger: runs.Trigger{Kind: runs.TriggerManual, By: "optoutctl:ops"},
		StartedAt: t0, FinishedAt: t0.Add(time.Minute), Writes: runs.Writes{PlannedSalesforce: 1, PlannedSalesConnect: 1},
		Preview: &runs.Preview{Total: 2, Changes: []runs.Change{
			{Side: runs.ChangeSalesforce, SalesforceID: "003RO0000035WQgYAM", Key: "acme.sc.c2MtMQ", What: "sales-connect-only"},
			{Side: runs.ChangeSalesConnect, SalesforceID: "00QRO0000035WQgYAM", What: "apply-opt-out"},
		}}}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := (runspanel.Panel{Runs: store}).Render(ctx, &b, "acme"); err != nil {
		t.Fatal(err)
	}
	got := text(b.String())
	for _, want := range []string{"Changes a run would make (2):",
		"Salesforce: set HasOptedOutOfEmail on 003RO0000035WQgYAM (opted out in Sales Connect only); ledger acme.sc.c2MtMQ",
		"Sales Connect: opt 00QRO0000035WQgYAM out (opted out in Salesforce only)"} {
		if !strings.Contains(got, want) {
			t.Errorf("panel lacks %q\ngot: %s", want, got)
		}
	}
}
