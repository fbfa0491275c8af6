package push_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/dupes"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// dupOrg seeds the address of one person on two Contacts and a Lead (the
// second Contact with the address in other letters, as Salesforce compares
// it), and a Contact of another address.
func (s *stack) dupOrg(org string) (contact1, contact2, lead, other string) {
	o := s.Org(org)
	contact1 = o.Put(sandbox.Record{Type: "Contact", Email: "pat@dupes.example"}).ID
	contact2 = o.Put(sandbox.Record{Type: "Contact", Email: "Pat@Dupes.Example"}).ID
	lead = o.Put(sandbox.Record{Type: "Lead", Email: "pat@dupes.example"}).ID
	other = o.Put(sandbox.Record{Type: "Contact", Email: "someone@else.example"}).ID
	return
}

func (s *stack) sfEntry(tenantID, id string) (optout.Entry, bool) {
	s.t.Helper()
	it, err := s.Ledger.Get(s.Ctx, optout.Key(tenantID, "", id), ledger.ViaAlias(), ledger.FollowMerges())
	if errors.Is(err, ledger.ErrNotFound) {
		return optout.Entry{}, false
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return it.Entry, true
}

// An opt-out of a person whose address is on two Contacts and a Lead opts
// out all three, each its own person in the ledger whose trail says whose
// duplicate it is; on the sales field, so the tenant's choice holds for the
// duplicates too (the Consent API would have written HasOptedOutOfEmail).
// The person's later resubscribe applies to it alone.
func TestDuplicatesByEmailOptOutEveryRecordOfTheAddress(t *testing.T) {
	s := newStack(t)
	field := s.PutSettings("acme", func(st *tenant.Settings) {
		st.SyncEnabled, st.Field, st.DuplicatesByEmail = true, tenant.SalesOptOut, true
	}).TargetField()
	c1, c2, lead, other := s.dupOrg("acme")
	s.start(fastConfig())

	s.publish("acme", "pat", sfID(c1))
	s.Eventually("the opt-out on all three records of the address", 30*time.Second, func() bool {
		return s.optedOut("acme", c1, field) && s.optedOut("acme", c2, field) && s.optedOut("acme", lead, field)
	})
	s.Eventually("the tenant settled", 30*time.Second, func() bool { return s.Settled("acme") })

	orig := s.entry("acme", "pat")
	for _, id := range []string{c2, lead} {
		e, ok := s.sfEntry("acme", id)
		switch {
		case !ok:
			t.Fatalf("duplicate %s has no ledger entry", id)
		case e.SalesConnectID != "" || e.SalesforceID != id:
			t.Errorf("duplicate %s is not a person of its own: %+v", id, e)
		case !e.OptedOut || e.State != optout.StateSynced || e.Confirmed == nil || !*e.Confirmed:
			t.Errorf("duplicate %s not opted out and confirmed: %+v", id, e)
		case e.LastEvent == nil || !strings.Contains(e.LastEvent.Reason, "duplicate by email of Sales Connect person pat (Contact "+c1+")"):
			t.Errorf("duplicate %s's trail does not say whose duplicate it is: %+v", id, e.LastEvent)
		case e.Source != orig.Source || !e.DecidedAt.Equal(orig.DecidedAt):
			t.Errorf("duplicate %s: source %s at %s, want the person's %s at %s", id, e.Source, e.DecidedAt, orig.Source, orig.DecidedAt)
		}
	}
	if r, _ := s.Org("acme").Get(c1); r.HasOptedOutOfEmail {
		t.Error("HasOptedOutOfEmail set on a tenant that chose the sales field")
	}
	for _, id := range []string{lead, c2} {
		if r, _ := s.Org("acme").Get(id); r.HasOptedOutOfEmail {
			t.Errorf("duplicate %s: HasOptedOutOfEmail set on a tenant that chose the sales field", id)
		}
	}
	if s.optedOut("acme", other, field) {
		t.Error("a Contact of another address was opted out")
	}

	// The person resubscribes: its own record is cleared; the duplicates,
	// opted out on its behalf, stay opted out (never silently reverted),
	// and their opt-out does not come back to the person.
	s.publish("acme", "pat", sfID(c1), resub(), at(time.Now()))
	s.Eventually("the person's resubscribe in Salesforce", 30*time.Second, func() bool {
		return !s.optedOut("acme", c1, field) && s.Settled("acme")
	})
	if e := s.entry("acme", "pat"); e.OptedOut || e.State != optout.StateSynced {
		t.Errorf("the person after its resubscribe: %+v", e)
	}
	for _, id := range []string{c2, lead} {
		if e, _ := s.sfEntry("acme", id); !e.OptedOut || !strings.HasPrefix(e.DecidedBy, dupes.EventPrefix) || !s.optedOut("acme", id, field) {
			t.Errorf("duplicate %s after the person's resubscribe: %+v", id, e)
		}
	}
}

// Off by default: a tenant without the setting changes only the one record.
func TestDuplicatesByEmailOffByDefault(t *testing.T) {
	s := newStack(t)
	field := s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled, st.Field = true, tenant.SalesOptOut }).TargetField()
	c1, c2, lead, _ := s.dupOrg("acme")
	s.start(fastConfig())

	s.publish("acme", "pat", sfID(c1))
	s.Eventually("the person's opt-out confirmed", 30*time.Second, func() bool {
		return s.optedOut("acme", c1, field) && s.Settled("acme")
	})
	for _, id := range []string{c2, lead} {
		if s.optedOut("acme", id, field) {
			t.Errorf("record %s of the same address opted out with the setting off", id)
		}
		if e, ok := s.sfEntry("acme", id); ok {
			t.Errorf("record %s of the same address in the ledger with the setting off: %+v", id, e)
		}
	}
}
