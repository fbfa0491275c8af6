package push_test

import (
	"fmt"
	"strings"

	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const std = tenant.StandardField
const sales = tenant.DefaultCustomField

func TestUnsubscribeReachesSalesforceAndIsAcked(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	contact, lead := s.seed("acme", "Contact"), s.seed("acme", "Lead")
	s.publish("acme", "sc-1", sfID(contact))
	s.publish("acme", "sc-2", sfID(lead[:15])) // 15-character ids are normalised

	s.Eventually("both opted out in Salesforce", 10*time.Second, func() bool {
		return s.optedOut("acme", contact, std) && s.optedOut("acme", lead, std)
	})
	s.Eventually("messages acked", 10*time.Second, func() bool { return s.Settled("acme") })
	e := s.entry("acme", "sc-2")
	if e.State != optout.StateSynced || e.SalesforceID != lead || e.Confirmed == nil || !*e.Confirmed || !e.SetByUs {
		t.Fatalf("ledger entry = %+v", e)
	}
	for _, c := range s.Org("acme").Calls() {
		if c.Route == sandbox.RouteCollectionsUpdate && (c.AutoAssign != "FALSE" || c.Client != "optout-sync") {
			t.Errorf("collections call sent Sforce-Auto-Assign=%q client=%q; want FALSE and optout-sync", c.AutoAssign, c.Client)
		}
	}
}

func TestFieldChoicePerTenant(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
	s.start(fastConfig())
	c1 := s.seed("acme", "Contact")
	s.publish("acme", "sc-1", sfID(c1))
	s.Eventually("sales field set", 10*time.Second, func() bool { return s.optedOut("acme", c1, sales) })
	if s.optedOut("acme", c1, std) {
		t.Error("HasOptedOutOfEmail was set although the tenant chose the sales field")
	}

	// Sync disabled: the unsubscribe still goes, to HasOptedOutOfEmail. The
	// change applies without a restart.
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = false; st.Field = tenant.SalesOptOut })
	time.Sleep(100 * time.Millisecond)
	c2 := s.seed("acme", "Contact")
	s.publish("acme", "sc-2", sfID(c2))
	s.Eventually("standard field set", 10*time.Second, func() bool { return s.optedOut("acme", c2, std) })
	if s.optedOut("acme", c2, sales) {
		t.Error("sales field written while sync is disabled")
	}
}

func TestBurstIsMicroBatched(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ids := make([]string, 450)
	for i := range ids {
		ids[i] = s.seed("acme", []string{"Contact", "Lead"}[i%2])
		s.publish("acme", "sc-"+ids[i], sfID(ids[i]))
	}
	// Everything waits in the ledger (the tenant is held without
	// credentials) before the first write, and a batch lingers long enough
	// to fill up: how many calls it takes does not depend on how fast this
	// machine ingests.
	restore := s.dropCreds("acme")
	cfg := fastConfig()
	cfg.Linger = time.Second
	s.start(cfg)
	s.Eventually("all 450 folded into the ledger", 20*time.Second, func() bool { return s.Drained("acme") })
	restore()
	s.Eventually("all 450 opted out", 20*time.Second, func() bool {
		for _, id := range ids {
			if !s.optedOut("acme", id, std) {
				return false
			}
		}
		return true
	})
	if n := s.writeCalls("acme"); n > 6 {
		t.Errorf("%d Collections calls for 450 opt-outs; want batches of up to 200 (3, allowing for linger splits 6)", n)
	}
}

func TestParkedWithoutIDThenPushedWhenLinked(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	s.publish("acme", "sc-9")
	s.Eventually("parked and acked", 10*time.Second, func() bool { return s.Settled("acme") })
	if e := s.entry("acme", "sc-9"); e.State != optout.StateParked || !e.OptedOut {
		t.Fatalf("entry = %+v; want PARKED_NO_ID opted out", e)
	}
	if s.metrics.Parked.Load() != 1 {
		t.Errorf("parked count = %d", s.metrics.Parked.Load())
	}
	// A later event for the person carries the id, even a resubscribe older
	// than the opt-out: the opt-out is what gets pushed.
	c := s.seed("acme", "Contact")
	s.publish("acme", "sc-9", sfID(c), resub(), at(time.Now().Add(-time.Hour)))
	s.Eventually("pushed once linked", 10*time.Second, func() bool { return s.optedOut("acme", c, std) })
}

func TestResubscribeRules(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.PutSettings("globex", func(st *tenant.Settings) {}) // email field
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
	s.start(fastConfig())
	t0 := time.Now().Add(-time.Hour)

	// Sales field: our own mark is cleared by a newer resubscribe.
	a := s.seed("acme", "Contact")
	s.publish("acme", "p1", sfID(a), at(t0))
	s.Eventually("sales opt-out pushed", 10*time.Second, func() bool { return s.optedOut("acme", a, sales) })
	s.Eventually("p1 settled", 10*time.Second, func() bool { return s.Settled("acme") })
	if e := s.entry("acme", "p1"); !e.SetByUs || e.Confirmed == nil || !*e.Confirmed {
		t.Fatalf("entry = %+v; want our confirmed mark", e)
	}
	if n := s.Org("acme").APICalls(); n != 1 {
		t.Errorf("the sales-field opt-out cost %d API calls; want 1 (the read and the write in one composite)", n)
	}
	s.publish("acme", "p1", sfID(a), resub(), at(t0.Add(time.Minute)))
	s.Eventually("sales field cleared", 10*time.Second, func() bool { return !s.optedOut("acme", a, sales) })

	// Email field: a resubscribe never clears the shared field.
	g := s.seed("globex", "Contact")
	s.publish("globex", "p2", sfID(g), at(t0))
	s.Eventually("email opt-out pushed", 10*time.Second, func() bool { return s.optedOut("globex", g, std) })
	s.publish("globex", "p2", sfID(g), resub(), at(t0.Add(time.Minute)))
	s.Eventually("resubscribe recorded", 10*time.Second, func() bool { return !s.entry("globex", "p2").OptedOut })
	if !s.optedOut("globex", g, std) {
		t.Error("HasOptedOutOfEmail was cleared by a resubscribe")
	}
	if r := s.entry("globex", "p2").Reason; !strings.Contains(r, "shared with marketing") {
		t.Errorf("reason = %q; want it to say why Salesforce was not cleared", r)
	}

	// A resubscribe older than the opt-out is ignored, whatever the order of arrival.
	b := s.seed("acme", "Contact")
	s.publish("acme", "p3", sfID(b), resub(), at(t0))
	s.publish("acme", "p3", sfID(b), at(t0.Add(time.Minute)))
	s.publish("acme", "p3", sfID(b), resub(), at(t0.Add(30*time.Second)))
	s.Eventually("settled", 10*time.Second, func() bool { return s.Settled("acme") })
	if !s.optedOut("acme", b, sales) || !s.entry("acme", "p3").OptedOut {
		t.Errorf("an older resubscribe reverted an opt-out: entry %+v", s.entry("acme", "p3"))
	}

	// A sales field someone else set is not ours to clear: the push's one
	// call reads it true just before writing it (the same true, which
	// moves LastModifiedDate), so it is recorded as someone else's; a later
	// resubscribe leaves it and calls nothing.
	c := s.seed("acme", "Contact")
	if err := s.Org("acme").Edit(c, func(r *sandbox.Record) { r.CustomOptOut = true }); err != nil {
		t.Fatal(err)
	}
	s.Eventually("settled before p4", 10*time.Second, func() bool { return s.Settled("acme") })
	org := s.Org("acme")
	apiCalls, logged := org.APICalls(), len(org.Calls())
	s.publish("acme", "p4", sfID(c), at(t0))
	s.Eventually("p4 settled", 10*time.Second, func() bool { return s.Settled("acme") })
	if e := s.entry("acme", "p4"); e.SetByUs || e.State != optout.StateSynced || e.Confirmed == nil || !*e.Confirmed {
		t.Fatalf("entry = %+v; want synced, Salesforce's true confirmed, not set by us", e)
	}
	if n := org.APICalls() - apiCalls; n != 1 {
		t.Errorf("the sales-field opt-out cost %d API calls; want 1", n)
	}
	if calls := org.Calls()[logged:]; len(calls) != 1 || calls[0].Route != sandbox.RouteComposite || len(calls[0].Subrequests) != 2 ||
		calls[0].Subrequests[0].Route != sandbox.RouteQuery || calls[0].Subrequests[1].Route != sandbox.RouteCollectionsUpdate {
		t.Errorf("calls %+v; want one composite that reads the field, then writes it", calls)
	}
	apiCalls = org.APICalls()
	s.publish("acme", "p4", sfID(c), resub(), at(t0.Add(time.Minute)))
	s.Eventually("p4 resubscribed", 10*time.Second, func() bool { return s.Settled("acme") && !s.entry("acme", "p4").OptedOut })
	if !s.optedOut("acme", c, sales) {
		t.Error("a resubscribe cleared a sales opt-out that someone else set")
	}
	if n := org.APICalls() - apiCalls; n != 0 {
		t.Errorf("the resubscribe of someone else's mark cost %d API calls; want none", n)
	}
}

func TestInvalidEventsGoToTheDLQAndDoNotBlock(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	bad := natsMsg(s.Topo.EventsSubject("acme"), []byte(`{"eventId":"e1","tenantId":"acme"}`), "application/json")
	if _, err := s.Prov.JS.PublishMsg(s.Ctx, bad); err != nil {
		t.Fatal(err)
	}
	c := s.seed("acme", "Contact")
	s.publish("acme", "sc-1", sfID(c))
	s.Eventually("good event applied", 10*time.Second, func() bool { return s.optedOut("acme", c, std) })
	s.Eventually("bad event in DLQ", 10*time.Second, func() bool { return len(s.dlq("acme")) == 1 })
	d := s.dlq("acme")[0]
	if got := d.Header.Get(event.HeaderErrorCode); got != string(event.CodeMissingField) {
		t.Errorf("DLQ code = %q", got)
	}
	if got := d.Header.Get(event.HeaderError); !strings.Contains(got, "person: is missing") {
		t.Errorf("DLQ reason = %q", got)
	}
	s.Eventually("acked", 10*time.Second, func() bool { return s.Settled("acme") })
}

func TestPermanentRecordFailuresAreDeadLetteredAndConvertedLeadsFollowed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	deleted := s.seed("acme", "Contact")
	if err := s.Org("acme").Delete(deleted); err != nil {
		t.Fatal(err)
	}
	lead := s.seed("acme", "Lead")
	contact, err := s.Org("acme").ConvertLead(lead)
	if err != nil {
		t.Fatal(err)
	}
	ok := s.seed("acme", "Contact")
	s.publish("acme", "gone", sfID(deleted))
	s.publish("acme", "conv", sfID(lead))
	s.publish("acme", "ok", sfID(ok))

	s.Eventually("converted lead's contact opted out", 10*time.Second, func() bool { return s.optedOut("acme", contact.ID, std) })
	s.Eventually("drained", 10*time.Second, func() bool { return s.Settled("acme") })
	if !s.optedOut("acme", ok, std) {
		t.Error("the healthy record was not written")
	}
	d := s.dlq("acme")
	if len(d) != 1 || d[0].Header.Get(event.HeaderErrorCode) != "ENTITY_IS_DELETED" {
		t.Fatalf("DLQ = %d messages (first code %q); want exactly the deleted record", len(d), first(d))
	}
	if e := s.entry("acme", "gone"); e.State != optout.StateFailed {
		t.Errorf("deleted record's entry = %+v", e)
	}
	if e := s.entry("acme", "conv"); e.SalesforceID != contact.ID || e.State != optout.StateSynced {
		t.Errorf("converted lead's entry = %+v; want it linked to contact %s", e, contact.ID)
	}
}

func TestNoCredentialsKeepsMessagesUntilConfigured(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	s.publish("initech", "sc-1", sfID("0035g00000AbCdEAAV"))
	s.Eventually("tenant marked unhealthy", 10*time.Second, func() bool {
		h, err := s.Health.Get(s.Ctx, "initech")
		return err == nil && h.Mode == tenant.ModeUnhealthy && strings.Contains(h.Reason, "no Salesforce credentials")
	})
	if len(s.dlq("initech")) != 0 {
		t.Fatal("an event of a tenant without credentials was dead-lettered")
	}
	// The event is acked into the ledger, where it waits: the events
	// stream's retention no longer matters.
	s.Eventually("event folded into the ledger", 10*time.Second, func() bool { return s.Drained("initech") })
	if e := s.entry("initech", "sc-1"); e.State != optout.StatePending || !e.OptedOut || e.Retry.Attempts != 0 {
		t.Fatalf("entry %+v; want the opt-out pending with no attempt counted while the tenant is held", e)
	}
}

func first(d []*jetstreamRaw) string {
	if len(d) == 0 {
		return ""
	}
	return d[0].Header.Get(event.HeaderErrorCode)
}

// TestAFirstLinkHonoursAnOptOutLearntFromSalesforce: the reconciler recorded
// a Salesforce opt-out for a person Sales Connect had never seen; the first
// event that links them starts from it, so an older resubscribe is ignored.
func TestAFirstLinkHonoursAnOptOutLearntFromSalesforce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	c := s.seed("acme", "Contact")
	if err := s.Org("acme").Edit(c, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now().Add(-time.Hour).UTC()
	if _, err := s.Ledger.Writer("acme", std, ledger.Fenced(testFence(1))).Update(s.Ctx, optout.Key("acme", "", c), optout.LearntStep(optout.Observation{EventID: "reconcile-1", SalesforceID: c,
		ObjectType: "Contact", Field: std, Value: true, At: t1, Now: t1})); err != nil {
		t.Fatal(err)
	}
	s.publish("acme", "sc-linked", sfID(c), resub(), at(t1.Add(-time.Minute)))
	s.Eventually("linked", 10*time.Second, func() bool { return s.Settled("acme") })
	e := s.entry("acme", "sc-linked")
	if !e.OptedOut || !e.DecidedAt.Equal(t1) {
		t.Fatalf("entry = %+v; want the Salesforce opt-out kept and the older resubscribe ignored", e)
	}
	if !s.optedOut("acme", c, std) {
		t.Error("Salesforce opt-out cleared")
	}
}

// An opt-out held back (here: no credentials) is pushed from the ledger as
// it is when the tenant recovers, not as its fold left it: a newer clear of
// Email Opt Out learnt from Salesforce meanwhile outranks it, and writing
// the fold's true would revert that person's own change in Salesforce.
func TestAHeldBackOptOutIsPushedAsTheLedgerNowHasIt(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	restore := s.dropCreds("acme")
	s.start(fastConfig())
	c := s.seed("acme", "Contact")
	t1 := time.Now().Add(-time.Hour).UTC()
	s.publish("acme", "sc-held", sfID(c), at(t1))
	s.Eventually("folded", 10*time.Second, func() bool { return s.Drained("acme") })
	// Held past the hold, the event was acked only once the person's
	// marker had taken over its debt.
	marked := 0
	if err := s.Ledger.Dirty(s.Ctx, "acme", func(ledger.DirtyItem) { marked++ }); err != nil || marked != 1 {
		t.Fatalf("%d dirty markers (%v) once the held-back opt-out was acked; want the person's", marked, err)
	}
	t2 := t1.Add(30 * time.Minute)
	if _, err := s.Ledger.Writer("acme", std, ledger.Fenced(testFence(1))).Update(s.Ctx, optout.Key("acme", "sc-held", ""), optout.LearntStep(optout.Observation{EventID: "reconcile-clear", SalesforceID: c,
		ObjectType: "Contact", Field: std, Value: false, At: t2, Now: t2})); err != nil {
		t.Fatal(err)
	}
	if e := s.entry("acme", "sc-held"); e.Dirty(std) {
		t.Fatalf("entry = %+v; want the newer clear to leave nothing to write", e)
	}
	// Past a fold's hint's freshness (5 s), as a recovering tenant is.
	time.Sleep(6 * time.Second)
	restore()
	s.Eventually("settled", 10*time.Second, func() bool { return s.Settled("acme") })
	time.Sleep(time.Second) // a write in flight would land by now
	if s.optedOut("acme", c, std) || s.writeCalls("acme") != 0 {
		t.Fatalf("Email Opt Out = %v after %d update calls; want the person's newer clear left alone, no write",
			s.optedOut("acme", c, std), s.writeCalls("acme"))
	}
}

// TestAnOptOutPushedAtOnceLeavesTheDirtySetAlone: its event is held
// unacked until the confirmation leaves the person clean, so neither
// field's push stores a dirty marker (the fold's put and the
// confirmation's delete were two of the eight messages an opt-out cost
// the server), and every event ends acked. A warm-up opt-out per tenant
// comes first: a runner's first catch-up scan marks whatever it finds
// dirty, the folds racing it included.
func TestAnOptOutPushedAtOnceLeavesTheDirtySetAlone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
	// Held for a quarter of AckWait: long against a batch even under -race.
	s.Topo.PusherAckWait = 20 * time.Second
	s.start(fastConfig())
	s.publish("acme", "sc-warm-a", sfID(s.seed("acme", "Contact")))
	s.publish("globex", "sc-warm-g", sfID(s.seed("globex", "Contact")))
	s.Eventually("warmed up", 10*time.Second, func() bool { return s.Settled("acme") && s.Settled("globex") })
	dirty, err := s.Prov.JS.Stream(s.Ctx, "KV_"+s.Topo.DirtyBucket())
	if err != nil {
		t.Fatal(err)
	}
	before := dirty.CachedInfo().State.LastSeq

	var acme, globex []string
	for i := range 5 {
		acme = append(acme, s.seed("acme", "Contact"))
		globex = append(globex, s.seed("globex", "Lead"))
		s.publish("acme", fmt.Sprint("sc-a", i), sfID(acme[i]))
		s.publish("globex", fmt.Sprint("sc-g", i), sfID(globex[i]))
	}
	s.Eventually("pushed and acked", 10*time.Second, func() bool { return s.Settled("acme") && s.Settled("globex") })
	for i := range 5 {
		if !s.optedOut("acme", acme[i], sales) || !s.optedOut("globex", globex[i], std) {
			t.Fatalf("person %d not opted out in Salesforce", i)
		}
	}
	info, err := dirty.Info(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.LastSeq - before; n != 0 {
		t.Errorf("the dirty set stored %d messages for opt-outs pushed at once; want none", n)
	}
}

// testFence is a lease that always holds, with a fixed token (a reconcile
// run's writer, as the pusher's tests stand in for one).
type testFence uint64

func (f testFence) Fence() uint64 { return uint64(f) }
func (testFence) Valid() bool     { return true }

// A sales-field write whose answer never came (the composite dropped after
// Salesforce applied it) leaves the mark unknown: never confirmed, and
// never taken for someone else's, although the record was already true
// before it (its read was lost with the answer). The person stays due and
// the next call settles it, without a read: the mark may be ours.
func TestASalesFieldWriteWithoutAnAnswerLeavesTheMarkUnknown(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.salesField()
	c := s.seed("acme", "Contact")
	org := s.Org("acme")
	if err := org.Edit(c, func(r *sandbox.Record) { r.CustomOptOut = true }); err != nil {
		t.Fatal(err)
	}
	fault := org.InjectFault(sandbox.Fault{Route: sandbox.RouteComposite, DropAfterWrite: true})
	s.start(fastConfig())
	s.publish("acme", "p", sfID(c), at(time.Now().Add(-time.Hour)))
	s.Eventually("a write without an answer recorded", 10*time.Second, func() bool {
		return s.folded("acme", "p") && s.entry("acme", "p").Retry.Attempts >= 1
	})
	if e := s.entry("acme", "p"); e.Confirmed != nil || !e.SetByUs || !e.Dirty(sales) || e.State != optout.StatePending {
		t.Fatalf("entry = %+v; want Salesforce's value unknown, the mark possibly ours, still due", e)
	}
	org.ClearFault(fault)
	logged := len(org.Calls())
	s.Eventually("settled", 10*time.Second, func() bool { return s.Settled("acme") })
	e := s.entry("acme", "p")
	if e.Confirmed == nil || !*e.Confirmed || !e.SetByUs || strings.Contains(e.Reason, "not by optout-sync") {
		t.Fatalf("entry = %+v; want confirmed and possibly ours", e)
	}
	for _, call := range org.Calls()[logged:] {
		for _, sub := range call.Subrequests {
			if sub.Route == sandbox.RouteQuery {
				t.Errorf("the write after a lost answer read the field: %+v", call)
			}
		}
	}
}
