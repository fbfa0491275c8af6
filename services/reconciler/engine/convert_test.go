package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// The nightly run follows converted Leads as the push does: a person the
// ledger knows by a Lead that Salesforce converted is compared on the
// Contact it became, never taken for a new person known to Salesforce
// only. An opt-out carried to the Contact by the conversion is the same
// opt-out (confirmed there, no event); an opt-out made on the Contact after
// the conversion reaches the person (with its event); the Lead stays an
// alias of the person.
func TestTheNightlyRunFollowsConvertedLeads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	org := h.Org("acme")
	field := optout.StandardField
	t0 := time.Now().Add(-72 * time.Hour).UTC().Truncate(time.Millisecond)
	w := h.Ledger.Writer("acme", field)
	person := func(name, lead string, optedOut bool) string {
		t.Helper()
		key := optout.Key("acme", "sc-"+name, "")
		e := optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + name, SalesforceID: lead, ObjectType: "Lead",
			OptedOut: optedOut, DecidedAt: t0, DecidedBy: "evt-" + name, Source: "EMAIL_LINK", State: optout.StateSynced}
		if optedOut {
			e.LastOptOutAt, e.Field, e.Confirmed, e.ConfirmedAt, e.SetByUs = t0, field, recontest.Ptr(true), t0, true
		}
		h.PutEntry(key, e)
		// Linked as ingest links a person: the Lead id is its alias.
		if _, err := w.Update(h.Ctx, key, optout.ObservedStep(lead, field, optedOut), ledger.Alias(lead)); err != nil {
			t.Fatal(err)
		}
		return key
	}
	// Opted out and confirmed on the Lead, converted since: the Contact
	// carries the opt-out.
	lead1 := org.Put(sandbox.Record{Type: "Lead", Email: "one@example.com", HasOptedOutOfEmail: true, SystemModstamp: t0.Add(-time.Hour)}).ID
	key1 := person("one", lead1, true)
	c1, err := org.ConvertLead(lead1)
	if err != nil {
		t.Fatal(err)
	}
	// Subscribed, converted, then opted out on the Contact in Salesforce.
	lead2 := org.Put(sandbox.Record{Type: "Lead", Email: "two@example.com", SystemModstamp: t0.Add(-time.Hour)}).ID
	key2 := person("two", lead2, false)
	c2, err := org.ConvertLead(lead2)
	if err != nil {
		t.Fatal(err)
	}
	if err := org.Edit(c2.ID, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}

	rep := h.runNow(h.replica(recontest.ReplicaOpts{Name: "replica-a"}), "acme", false)
	if rep.Status != runs.StatusSucceeded {
		t.Fatalf("run %s (%s)", rep.Status, rep.Reason)
	}
	if c := rep.Counts; c.KnownToSalesforceOnly != 0 || c.LeadsConverted != 2 || c.SalesforceOnly != 1 {
		t.Errorf("counts %+v; want both Contacts followed from their Leads (one opted out in Salesforce only), none new to the ledger", c)
	}
	for _, c := range []string{c1.ID, c2.ID} {
		if _, err := h.Ledger.Get(h.Ctx, optout.Key("acme", "", c)); err == nil {
			t.Errorf("an sf.%s entry was made: the converted Lead's person was taken for a new one", c)
		}
	}
	e1, _ := h.Entry(key1)
	if e1.SalesforceID != c1.ID || !e1.OptedOut || e1.Confirmed == nil || !*e1.Confirmed {
		t.Errorf("person one: %s %s optedOut %t confirmed %v; want it on Contact %s, confirmed", e1.ObjectType, e1.SalesforceID, e1.OptedOut, e1.Confirmed, c1.ID)
	}
	e2, _ := h.Entry(key2)
	if e2.SalesforceID != c2.ID || !e2.OptedOut {
		t.Errorf("person two: %s %s optedOut %t; want it on Contact %s, opted out", e2.ObjectType, e2.SalesforceID, e2.OptedOut, c2.ID)
	}
	evs, _ := h.AppliedEvents("acme")
	if len(evs) != 1 || evs[0].GetPerson().GetSalesConnectId() != "sc-two" || evs[0].GetPerson().GetSalesforceId() != c2.ID {
		t.Errorf("applied events %v; want one, for person two on its Contact", evs)
	}
	if rep.Writes.LeadsFollowed != 2 {
		t.Errorf("writes %+v; want the two persons followed", rep.Writes)
	}
	if got := runview.Compared(rep); !strings.Contains(got, "2 known by a Lead Salesforce converted, compared on its Contact") {
		t.Errorf("report says %q", got)
	}
	// The Lead stays the person's alias.
	if k, ok, err := h.Ledger.KeyOf(h.Ctx, "acme", lead2); err != nil || !ok || k != key2 {
		t.Errorf("alias of Lead two: %q %t %v; want %s", k, ok, err, key2)
	}
}
