package root_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// Turning sync on starts no catch-up run for a slot from before it (the
// reconciler passes over the tenant and starts nothing), and `reconcile
// status` says when the first run will be and how to ask for one now.
func TestTurningSyncOnSchedulesTheNextSlotNotARunAtOnce(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	svc := s.StartReconciler(engine.Hooks{})
	s.Run("tenant", "set", "acme", "--sync=true").Expect(t, 0)
	s.WaitReconcilerSees("acme")
	if err := svc.RunDue(s.Ctx); err != nil {
		t.Fatal(err)
	}
	svc.Wait()

	out := s.Run("reconcile", "status", "acme").Expect(t, 0).Stdout
	for _, want := range []string{
		"No runs of tenant acme yet.",
		"Next run: ", "(20:00 America/Los_Angeles), the first since sync was turned on at ",
		"start one now with 'optoutctl reconcile run acme'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("reconcile status lacks %q:\n%s", want, out)
		}
	}
	var st struct {
		NextRun struct {
			At    string `json:"at"`
			Due   bool   `json:"due"`
			First bool   `json:"first"`
		} `json:"nextRun"`
	}
	if err := json.Unmarshal([]byte(s.Run("reconcile", "status", "acme", "-o", "json").Expect(t, 0).Stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.NextRun.Due || !st.NextRun.First || st.NextRun.At == "" {
		t.Errorf("nextRun %+v; want the first run at the next slot, not due now", st.NextRun)
	}
}

// A run stopped by its API budget before it had read Salesforce says so:
// "not compared" where the report and the exit message would say what
// remains, never "0 changes remain".
func TestABudgetStoppedRunThatCouldNotCompareSaysNotCompared(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartReconciler(engine.Hooks{})
	s.EnableSync("acme")
	org := s.Sandbox.Org("acme")
	org.Put(sandbox.Record{Type: "Contact", Email: "sf-only@example.com", HasOptedOutOfEmail: true})
	org.SetDailyAPILimit(1000)
	org.SetAPIUsage(975) // a budget of 4 calls: spent before the read ends

	r := s.Run("reconcile", "run", "acme").Expect(t, 4)
	for _, want := range []string{
		"Status:     stopped_budget",
		"Compared:   not compared: the run stopped before it had read both sides",
		"remaining not known (not compared)",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.Stdout)
		}
	}
	if !strings.Contains(r.Stderr, "changes remaining: not known (not compared)") || strings.Contains(r.Stderr, "0 changes remain") {
		t.Errorf("exit message: %s", r.Stderr)
	}
	if strings.Contains(r.Stdout, "remaining 0") {
		t.Errorf("a run that could not compare reports 0 remaining:\n%s", r.Stdout)
	}
}
