package engine_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// The reconciler's sales-field writes take turns with the push's through
// the person's claim (optout.Claim): a run leaves a person whose push is
// in flight (its true landing after the push's newer false would hold
// the opt-out again), and releases the claims it took itself.
func TestARunLeavesAPersonAnotherWriterIsWriting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	st := h.SetSettings("acme", func(st *tenant.Settings) { st.Field = tenant.SalesOptOut })
	old := time.Now().Add(-48 * time.Hour)
	t0 := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Millisecond)
	pending := func(sc, id string, claim *optout.Claim) string {
		key := optout.Key("acme", sc, "")
		h.PutEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: sc, SalesforceID: id, ObjectType: "Contact",
			OptedOut: true, DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-" + sc, Source: "EMAIL_LINK",
			State: optout.StatePending, Writing: claim})
		return key
	}
	busyID := h.Org("acme").Put(sandbox.Record{Type: "Contact", Email: "busy@example.com", SystemModstamp: old}).ID
	freeID := h.Org("acme").Put(sandbox.Record{Type: "Contact", Email: "free@example.com", SystemModstamp: old}).ID
	push := optout.NewClaim(time.Now(), time.Hour) // a push replica's write in flight
	busy := pending("sc-busy", busyID, push)
	free := pending("sc-free", freeID, nil)

	rep := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-a"}), "acme", false)
	if rep.Status != runs.StatusSucceeded {
		t.Fatalf("run %s: %s", rep.Status, rep.Reason)
	}
	if r, _ := h.Org("acme").Get(busyID); r.CustomOptOut {
		t.Errorf("the run wrote %s while a push held its claim", st.TargetField())
	}
	if e, _ := h.Entry(busy); e.Writing == nil || e.Writing.ID != push.ID {
		t.Errorf("the push's claim is %+v after the run; want it untouched", e.Writing)
	}
	if r, _ := h.Org("acme").Get(freeID); !r.CustomOptOut {
		t.Errorf("the run did not write the person nobody else was writing")
	}
	if e, _ := h.Entry(free); e.Writing != nil || e.Confirmed == nil || !*e.Confirmed {
		t.Errorf("after the run: claim %+v, confirmed %v; want the write confirmed and its claim released", e.Writing, e.Confirmed)
	}
}
