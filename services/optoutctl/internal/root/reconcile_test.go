package root_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

var (
	runIDs       = regexp.MustCompile(`\b\d{8}T\d{6}(\d{3})?Z-[0-9a-f]{6}\b`)
	durations    = regexp.MustCompile(`\b(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s)\b`)
	durationJSON = regexp.MustCompile(`"durationSeconds": [0-9.e+-]+`)
	progressLine = regexp.MustCompile(`(?m)^progress: .*\n`)
	padding      = regexp.MustCompile(` {2,}`)
)

// columns collapses a table's padding, which follows the width of the
// durations normalised away.
func columns(r testkit.Result) testkit.Result {
	r.Stdout = padding.ReplaceAllString(r.Stdout, "  ")
	return r
}

// stable replaces what a real run varies on top of testkit.Normalize: run
// ids, durations, and the progress lines (how many depends on polling).
func stable(r testkit.Result) testkit.Result {
	r.Stdout = runIDs.ReplaceAllString(r.Stdout, "RUNID")
	r.Stderr = runIDs.ReplaceAllString(r.Stderr, "RUNID")
	r.Stdout = durationJSON.ReplaceAllString(durations.ReplaceAllString(r.Stdout, "DUR"), `"durationSeconds": DUR`)
	r.Stderr = progressLine.ReplaceAllString(r.Stderr, "")
	return r
}

// TestReconcileCommands starts dry runs and runs on a real in-process
// reconciler (real NATS, Redis leases and the Salesforce sandbox), follows
// them to their reports, refuses what the reconciler refuses, and reads the
// status and history, including a run paused in the middle.
func TestReconcileCommands(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.Env.Set("USER", "ops")
	var paused atomic.Bool
	release := make(chan struct{})
	s.StartReconciler(engine.Hooks{At: func(ctx context.Context, point string) {
		if point == "after-diff" && paused.Load() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}})
	s.EnableSync("acme")
	org := s.Sandbox.Org("acme")
	org.Put(sandbox.Record{Type: "Contact", Email: "sf-only@example.com", HasOptedOutOfEmail: true})
	org.Put(sandbox.Record{Type: "Contact", Email: "subscribed@example.com"})

	s.Run("reconcile", "status", "acme").Expect(t, 0).Golden(t, "reconcile_status_none")
	s.Run("reconcile", "history", "acme").Expect(t, 0).Golden(t, "reconcile_history_empty")

	dry := stable(s.Run("reconcile", "dry-run", "acme").Expect(t, 0))
	dry.Golden(t, "reconcile_dry_run")
	stable(s.Run("reconcile", "run", "acme", "-o", "json").Expect(t, 0)).Golden(t, "reconcile_run_json")
	s.Run("reconcile", "run", "globex").Expect(t, 4).Golden(t, "reconcile_run_sync_disabled")
	s.Run("reconcile", "run", "acme", "--limit", "3").Expect(t, 2)

	// A run paused after its diff: started detached, seen in status,
	// and in the way of a dry run.
	paused.Store(true)
	stable(s.Run("reconcile", "run", "acme", "--detach").Expect(t, 0)).Golden(t, "reconcile_run_detach")
	s.Eventually("the paused run's checkpoint", func() bool {
		cp, err := s.Runs().Active(s.Ctx, "acme")
		return err == nil && cp.DiffComplete
	})
	stable(s.Run("reconcile", "status", "acme").Expect(t, 0)).Golden(t, "reconcile_status_running")
	stable(s.Run("reconcile", "dry-run", "acme").Expect(t, 4)).Golden(t, "reconcile_dry_run_busy")
	close(release)
	s.Eventually("the paused run's end", func() bool {
		_, err := s.Runs().Active(s.Ctx, "acme")
		h, herr := s.Runs().History(s.Ctx, "acme", 1)
		return errors.Is(err, runs.ErrNotFound) && herr == nil && len(h) == 1 && h[0].Status.Final()
	})

	stable(s.Run("reconcile", "status", "acme").Expect(t, 0)).Golden(t, "reconcile_status")
	columns(stable(s.Run("reconcile", "history", "acme").Expect(t, 0))).Golden(t, "reconcile_history")
	stable(s.Run("reconcile", "history", "acme", "--limit", "1", "-o", "json").Expect(t, 0)).Golden(t, "reconcile_history_json")

	// The runs since the first are incremental; --full asks for a full scan.
	if r := s.Run("reconcile", "run", "acme", "--full").Expect(t, 0); !regexp.MustCompile(`Scan: +full \(a full scan was requested by optoutctl:ops\): read 1 Salesforce opt-outs`).MatchString(r.Stdout) {
		t.Errorf("reconcile run --full:\n%s", r.Stdout)
	}

	// The tenant's CDC stream fell back to the nightly run: status says why.
	c := runs.CDC{State: runs.CDCFallback, Since: testkit.T0.Add(-time.Hour), Until: testkit.T0.Add(14 * time.Minute),
		Reason: "the org's delivered-event allocation (25000 a day) is spent; the stream resumes from its stored position when it has room again; the nightly run keeps Salesforce-side changes in step meanwhile",
		Topic:  "/data/ChangeEvents", Allocation: 25000, UsedRatio: 1, Applied: 12, LastAt: testkit.T0.Add(-2 * time.Hour),
		Reconcile: &runs.CDCReconcile{At: testkit.T0.Add(-3 * time.Hour), Reason: "Salesforce sent GAP_OVERFLOW for Contact (a transaction changed more records than CDC carries)", RunID: "20250601T090000Z-abcdef"}}
	c.CountDelivered(testkit.T0.Add(-2*time.Hour), 240)
	if _, err := s.Runs().UpdateCDC(s.Ctx, "acme", 1, func(cur *runs.CDC) bool { *cur = c; return true }); err != nil {
		t.Fatal(err)
	}
	stable(s.Run("reconcile", "status", "acme").Expect(t, 0)).Golden(t, "reconcile_status_cdc")

	// No Salesforce credentials: the run fails, exit 1.
	s.EnableSync("initech")
	stable(s.Run("reconcile", "run", "initech").Expect(t, 1)).Golden(t, "reconcile_run_failed")

	if !strings.Contains(dry.Stderr, "Started dry run RUNID of tenant acme on replica "+testkit.ReconcilerReplica) {
		t.Errorf("dry-run stderr: %q", dry.Stderr)
	}
}

func TestReconcileStatusOfAnUnknownTenantIsNotFound(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartReconciler(engine.Hooks{})
	for _, cmd := range []string{"status", "history"} {
		r := s.Run("reconcile", cmd, "nosuchtenant").Expect(t, 3)
		if !strings.Contains(r.Stderr, "tenant nosuchtenant not found") {
			t.Errorf("reconcile %s: stderr %q", cmd, r.Stderr)
		}
	}
}

// TestReconcileStoppedByTheBudgetExits4: a run that spends its share of
// the org's remaining allowance stops cleanly, and scripts see exit 4.
func TestReconcileStoppedByTheBudgetExits4(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartReconciler(engine.Hooks{})
	s.EnableSync("acme")
	org := s.Sandbox.Org("acme")
	org.Put(sandbox.Record{Type: "Contact", Email: "sf-only@example.com", HasOptedOutOfEmail: true})
	// 10 calls left today: a run may spend 20% of them, not enough to read both objects.
	org.SetAPIUsage(org.Config().DailyAPILimit - 10)
	r := s.Run("reconcile", "run", "acme").Expect(t, 4)
	if !regexp.MustCompile(`Status: +stopped_budget`).MatchString(r.Stdout) || !strings.Contains(r.Stderr, "stopped when its API budget ran out") {
		t.Fatalf("output does not say the API budget stopped the run:\n%s\n%s", r.Stdout, r.Stderr)
	}
}

// TestReconcileStoppedByTheGuardExits4: under latest-wins, Salesforce
// cleared eleven opt-outs we had confirmed; applying them all would be a
// mass resubscribe, so the run stops before writing and scripts see exit 4.
func TestReconcileStoppedByTheGuardExits4(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartReconciler(engine.Hooks{})
	s.EnableSync("acme")
	st := tenant.Default("acme")
	st.SyncEnabled, st.ConflictPolicy = true, tenant.PolicyLatestWins
	s.PutSettings(st)
	org := s.Sandbox.Org("acme")
	for i := range 11 {
		id := org.Put(sandbox.Record{Type: "Contact", Email: fmt.Sprintf("p%d@example.com", i)}).ID // not opted out, changed now
		sc := fmt.Sprintf("sc-%d", i)
		// Sales Connect's opt-out, and our push of it confirmed.
		res, err := s.Ledger.Writer("acme", tenant.StandardField).Ingest(s.Ctx, optout.EventInput{
			ID: "evt-" + sc, Action: optout.OptOut, OccurredAt: testkit.T0, Source: "EMAIL_LINK",
			SalesConnectID: sc, SalesforceID: id, ObjectType: "Contact",
		})
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Ledger.Writer("acme", tenant.StandardField).Update(s.Ctx, res.Key, optout.WroteStep(optout.Write{
			SalesforceID: id, Field: tenant.StandardField, Value: true, At: testkit.T0, OK: true,
		}), ledger.BasedOn(res.Rev))
		e := w.Entry
		if err != nil || e.State != optout.StateSynced || !e.SetByUs {
			t.Fatalf("seed %s: %+v %v", sc, e, err)
		}
	}
	r := s.Run("reconcile", "run", "acme").Expect(t, 4)
	if !regexp.MustCompile(`Status: +stopped_guard`).MatchString(r.Stdout) || !strings.Contains(r.Stderr, "mass-resubscribe guard") {
		t.Fatalf("output does not say the guard stopped the run:\n%s\n%s", r.Stdout, r.Stderr)
	}
	for i := range 11 {
		if it, err := s.Ledger.Get(s.Ctx, optout.Key("acme", fmt.Sprintf("sc-%d", i), "")); err != nil || !it.Entry.OptedOut {
			t.Fatalf("the guarded run changed sc-%d: %+v %v", i, it.Entry, err)
		}
	}
}
