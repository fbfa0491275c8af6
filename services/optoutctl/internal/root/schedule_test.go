package root_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
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
