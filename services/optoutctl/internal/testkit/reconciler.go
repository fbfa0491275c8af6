package testkit

import (
	"time"

	"github.com/optout-sync/optout-sync/internal/teststack/reconstack"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// ReconcilerReplica is the name of the test's reconciler replica.
const ReconcilerReplica = "reconciler-test"

// Runs is the stack's run-report store.
func (s *Stack) Runs() runs.Store { return runs.Store{KV: s.Prov.Runs} }

// StartReconciler runs a real reconciler replica (real Redis leases under a
// per-test prefix) until the test ends. Its schedule ticks hourly; a test
// that enables sync should claim the tenant's slot far ahead (NoSchedule)
// so only the runs it asks for happen. hooks pause runs at named points.
func (s *Stack) StartReconciler(hooks engine.Hooks) *service.Service {
	s.T.Helper()
	if s.recon == nil {
		s.recon = reconstack.New(s.T, s.Stack)
	}
	return s.recon.Start(reconstack.Options{
		Name: ReconcilerReplica, Hooks: hooks, ErrorsOnly: true, Tick: time.Hour,
		// A transient failure ends the run at once instead of a retry
		// later: the tests follow each run to its report.
		Cfg: func(c *engine.Config) { c.MaxFailures = 1 },
	})
}

// EnableSync stores a tenant's settings with sync enabled, claims its
// schedule slots up to 2100 (so the reconciler starts only requested runs)
// and waits until the reconciler (started first) sees the settings.
func (s *Stack) EnableSync(t string) {
	s.T.Helper()
	s.NoSchedule(t)
	st := tenant.Default(t)
	st.SyncEnabled = true
	s.PutSettings(st)
}

// NoSchedule claims the tenant's schedule slots up to 2100.
func (s *Stack) NoSchedule(t string) {
	s.T.Helper()
	if _, err := s.Runs().ClaimSlot(s.Ctx, t, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), "none", "test"); err != nil {
		s.T.Fatal(err)
	}
}

// PutSettings stores a tenant's settings and waits until the running
// reconciler sees them.
func (s *Stack) PutSettings(st tenant.Settings) {
	s.T.Helper()
	s.Stack.PutSettings(st.Tenant, func(x *tenant.Settings) { *x = st })
	if s.recon != nil {
		s.recon.WaitSettings(st)
	}
}

// WaitReconcilerSees waits until the running reconciler sees the tenant's
// stored settings (as optoutctl or the page last wrote them).
func (s *Stack) WaitReconcilerSees(t string) {
	s.T.Helper()
	st, err := s.Settings.Get(s.Ctx, t)
	if err != nil {
		s.T.Fatal(err)
	}
	s.recon.WaitSettings(st)
}
