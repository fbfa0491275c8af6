package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// The nightly run catches the duplicates the push and the CDC stream
// missed: a Lead created with the address of a person who opted out (while
// no stream ran) is opted out by the run, as a person of its own whose
// trail names the person; a Contact of another address and a dry run are
// left alone; a duplicate that resubscribed itself, after the person's
// opt-out, keeps its resubscribe.
func TestTheNightlyRunCatchesDuplicatesByEmail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", func(st *tenant.Settings) { st.DuplicatesByEmail = true })
	org := h.Org("acme")
	field := optout.StandardField
	t0 := time.Now().Add(-72 * time.Hour).UTC().Truncate(time.Millisecond)

	c1 := org.Put(sandbox.Record{Type: "Contact", Email: "ann@dupes.example", HasOptedOutOfEmail: true, SystemModstamp: t0}).ID
	lead := org.Put(sandbox.Record{Type: "Lead", Email: "ANN@dupes.example"}).ID
	resubbed := org.Put(sandbox.Record{Type: "Contact", Email: "ann@dupes.example"}).ID
	other := org.Put(sandbox.Record{Type: "Contact", Email: "bob@dupes.example"}).ID
	w := h.Ledger.Writer("acme", field)
	if _, err := w.Ingest(h.Ctx, optout.EventInput{ID: "evt-ann", Action: optout.OptOut, OccurredAt: t0, Source: "EMAIL_LINK",
		SalesConnectID: "sc-ann", SalesforceID: c1, ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}
	// The second Contact of the address resubscribed itself, after the
	// person's opt-out: its own explicit wish, newer, stands.
	if _, err := w.Ingest(h.Ctx, optout.EventInput{ID: "evt-resubbed", Action: optout.Resubscribe, OccurredAt: t0.Add(time.Hour),
		Source: "EMAIL_LINK", SalesConnectID: "sc-resubbed", SalesforceID: resubbed, ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}

	r := h.replica(recontest.ReplicaOpts{Name: "replica-a"})
	if rep := h.runNow(r, "acme", true); rep.Status != runs.StatusSucceeded && rep.Status != runs.StatusIncomplete {
		t.Fatalf("dry run: %s %s", rep.Status, rep.Reason)
	}
	if rec, _ := org.Get(lead); rec.HasOptedOutOfEmail {
		t.Fatal("a dry run opted out a duplicate")
	}
	if _, err := h.Ledger.Get(h.Ctx, optout.Key("acme", "", lead), ledger.ViaAlias()); err == nil {
		t.Fatal("a dry run recorded a duplicate")
	}

	rep := h.runNow(r, "acme", false)
	if rep.Status != runs.StatusSucceeded {
		t.Fatalf("run: %s %s", rep.Status, rep.Reason)
	}
	if rec, _ := org.Get(lead); !rec.HasOptedOutOfEmail {
		t.Error("the Lead of the suppressed address was not opted out by the run")
	}
	e, _ := h.Entry(optout.Key("acme", "", lead))
	if !e.OptedOut || e.SalesforceID != lead || e.ObjectType != "Lead" || e.LastEvent == nil ||
		!strings.Contains(e.LastEvent.Reason, "duplicate by email of Sales Connect person sc-ann (Contact "+c1+")") {
		t.Errorf("the duplicate's entry: %+v (last event %+v)", e, e.LastEvent)
	}
	if rec, _ := org.Get(other); rec.HasOptedOutOfEmail {
		t.Error("a Contact of another address was opted out")
	}
	if rec, _ := org.Get(resubbed); rec.HasOptedOutOfEmail {
		t.Error("a duplicate's own newer resubscribe was overridden")
	}
	if e, _ := h.Entry(optout.Key("acme", "sc-resubbed", "")); e.OptedOut {
		t.Errorf("the resubscribed duplicate's wish: %+v", e)
	}

	// Found again by the next run, the duplicate changes nothing.
	before, _ := h.Entry(optout.Key("acme", "", lead))
	if rep := h.runNow(r, "acme", false); rep.Status != runs.StatusSucceeded {
		t.Fatalf("second run: %s %s", rep.Status, rep.Reason)
	}
	if after, _ := h.Entry(optout.Key("acme", "", lead)); after.Version != before.Version {
		t.Errorf("the second run changed the duplicate: version %d -> %d", before.Version, after.Version)
	}
}
