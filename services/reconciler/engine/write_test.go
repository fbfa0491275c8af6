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

// A run whose Salesforce write of the sales field lands but never gets an
// answer (the connection dropped every time, as when a replica dies
// mid-call) leaves the ledger saying the mark may be ours, so the person's
// later resubscribe still clears it instead of taking it for someone
// else's.
func TestARunWhoseWriteLandsUnansweredLeavesTheMarkOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	st := h.SetSettings("acme", func(st *tenant.Settings) { st.Field = tenant.SalesOptOut })
	field := st.TargetField()
	id := h.Org("acme").Put(sandbox.Record{Type: "Contact", Email: "p@example.com", SystemModstamp: time.Now().Add(-48 * time.Hour)}).ID
	key := optout.Key("acme", "sc-p", "")
	t0 := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Millisecond)
	h.PutEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-p", SalesforceID: id, ObjectType: "Contact",
		OptedOut: true, DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-p", Source: "EMAIL_LINK", State: optout.StatePending})
	h.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, DropAfterWrite: true})

	rep := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-a"}), "acme", false)
	if rep.Status == runs.StatusSucceeded {
		t.Fatalf("run %s although no write was ever answered", rep.Status)
	}
	if r, _ := h.Org("acme").Get(id); !r.CustomOptOut {
		t.Fatal("the dropped write did not land: the test needs it to")
	}
	if _, err := h.Ledger.Writer("acme", field).Ingest(h.Ctx, optout.EventInput{ID: "evt-r", Action: optout.Resubscribe,
		OccurredAt: time.Now().Add(-time.Hour), SalesConnectID: "sc-p", SalesforceID: id, ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}
	e, _ := h.Entry(key)
	if v, w := e.Target(field); v || !w {
		t.Fatalf("after the resubscribe Target(%s) = (%t, %t); want a write of false due: the true may be ours (entry field %q setByUs %t confirmed %v)",
			field, v, w, e.Field, e.SetByUs, e.Confirmed)
	}
}

// A run whose write meets a Lead converted since Sales Connect learnt of it
// follows the conversion, as the push does (one write protocol): the person
// now points at the Contact the Lead became, and the same run writes the
// opt-out there (the push's next round would), so the record planned is
// written.
func TestARunFollowsALeadConvertedBeforeItsWrite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	lead := h.Org("acme").Put(sandbox.Record{Type: "Lead", Email: "l@example.com", SystemModstamp: time.Now().Add(-48 * time.Hour)}).ID
	key := optout.Key("acme", "sc-l", "")
	t0 := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Millisecond)
	h.PutEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-l", SalesforceID: lead, ObjectType: "Lead",
		OptedOut: true, DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-l", Source: "EMAIL_LINK", State: optout.StatePending})
	contact, err := h.Org("acme").ConvertLead(lead)
	if err != nil {
		t.Fatal(err)
	}

	rep := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-a"}), "acme", false)
	if rep.Status != runs.StatusSucceeded {
		t.Fatalf("run %s (%s); want it to succeed", rep.Status, rep.Reason)
	}
	if w := rep.Writes; w.SalesforceWritten != 1 || w.SalesforceFailed != 0 || w.LeadsFollowed != 1 {
		t.Fatalf("writes %+v; want the person followed to the Contact and the Contact written", w)
	}
	e, _ := h.Entry(key)
	if e.SalesforceID != contact.ID || e.ObjectType != "Contact" {
		t.Fatalf("entry points at %s %s; want the Contact %s the Lead became", e.ObjectType, e.SalesforceID, contact.ID)
	}
	if v, due := e.Target(optout.StandardField); !v || due || e.Confirmed == nil || !*e.Confirmed {
		t.Fatalf("Target = (%t, %t), confirmed %v; want the Contact's opt-out written and confirmed", v, due, e.Confirmed)
	}
	if r, _ := h.Org("acme").Get(contact.ID); !r.HasOptedOutOfEmail {
		t.Fatal("the Contact is not opted out in Salesforce after the run")
	}
}
