package service_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// A run whose write meets a Lead converted since Sales Connect learnt of it
// follows the conversion, as the push does (one write protocol): the person
// now points at the Contact the Lead became, where its opt-out is written
// next, and the Lead's write counts as not made.
func TestARunFollowsALeadConvertedBeforeItsWrite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.setSettings("acme", nil)
	lead := h.org("acme").Put(sandbox.Record{Type: "Lead", Email: "l@example.com", SystemModstamp: time.Now().Add(-48 * time.Hour)}).ID
	key := optout.Key("acme", "sc-l", "")
	t0 := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Millisecond)
	h.putEntry(key, optout.Entry{Tenant: "acme", SalesConnectID: "sc-l", SalesforceID: lead, ObjectType: "Lead",
		OptedOut: true, DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-l", Source: "EMAIL_LINK", State: optout.StatePending})
	contact, err := h.org("acme").ConvertLead(lead)
	if err != nil {
		t.Fatal(err)
	}

	rep := h.runNow(h.replica(replicaOpts{name: "replica-a"}), "acme", false)
	if rep.Status != runs.StatusSucceeded {
		t.Fatalf("run %s (%s); want it to succeed", rep.Status, rep.Reason)
	}
	if w := rep.Writes; w.SalesforceWritten != 0 || w.SalesforceFailed != 1 {
		t.Fatalf("writes %+v; want the Lead's write counted as not made", w)
	}
	e, _ := h.entry(key)
	if e.SalesforceID != contact.ID || e.ObjectType != "Contact" {
		t.Fatalf("entry points at %s %s; want the Contact %s the Lead became", e.ObjectType, e.SalesforceID, contact.ID)
	}
	if v, due := e.Target(optout.StandardField); !v || !due {
		t.Fatalf("Target = (%t, %t); want the Contact's opt-out due", v, due)
	}
}
