package recontest

import (
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Scenario is a tenant seeded with one person of every class of the diff.
type Scenario struct {
	H      *Harness
	Tenant string
	Field  string
	Policy string
	IDs    map[string]string // person → 18-character Salesforce id
	Keys   map[string]string // person → ledger key
	T0     time.Time         // the ledger's decisions
	Newer  time.Time         // Salesforce edits after them
	Older  time.Time         // Salesforce edits before them
}

// person describes one seeded person.
type person struct {
	name     string
	typ      string // Contact | Lead
	sf       *bool  // nil: no Salesforce record
	sfAt     func(s *Scenario) time.Time
	deleted  bool
	ledger   bool // has a ledger entry
	optedOut bool
	confirm  bool // the ledger recorded Salesforce showing true
	noID     bool // the entry carries no Salesforce id
}

// Ptr points at b.
func Ptr(b bool) *bool { return &b }

func older(s *Scenario) time.Time { return s.Older }
func newer(s *Scenario) time.Time { return s.Newer }

var people = []person{
	{name: "inboth", typ: "Contact", sf: Ptr(true), sfAt: older, ledger: true, optedOut: true, confirm: true},
	{name: "unconfirmed", typ: "Contact", sf: Ptr(true), sfAt: older, ledger: true, optedOut: true},
	{name: "sconly", typ: "Contact", sf: Ptr(false), sfAt: older, ledger: true, optedOut: true},
	{name: "sconly-lead", typ: "Lead", sf: Ptr(false), sfAt: older, ledger: true, optedOut: true},
	{name: "sfonly", typ: "Contact", sf: Ptr(true), sfAt: newer, ledger: true},
	{name: "known", typ: "Lead", sf: Ptr(true), sfAt: newer},
	{name: "parked", ledger: true, optedOut: true, noID: true},
	{name: "sfresub", typ: "Contact", sf: Ptr(false), sfAt: newer, ledger: true, optedOut: true, confirm: true},
	{name: "deleted", typ: "Contact", sf: Ptr(true), sfAt: older, deleted: true, ledger: true, optedOut: true, confirm: true},
	{name: "scresub", typ: "Contact", sf: Ptr(true), sfAt: older, ledger: true},
	{name: "cleared", typ: "Contact", sf: Ptr(false), sfAt: older, ledger: true, optedOut: true, confirm: true},
	{name: "neither", typ: "Contact", sf: Ptr(false), sfAt: older, ledger: true},
	{name: "stranger", typ: "Lead", sf: Ptr(false), sfAt: older},
}

// Seed creates the scenario in org/tenant t with the given field choice
// and policy (and stores the tenant's settings).
func (h *Harness) Seed(t string, sales bool, policy string) *Scenario {
	h.T.Helper()
	st := h.SetSettings(t, func(st *tenant.Settings) {
		if sales {
			st.Field = tenant.SalesOptOut
		}
		st.ConflictPolicy = policy
	})
	now := time.Now().UTC().Truncate(time.Millisecond)
	s := &Scenario{H: h, Tenant: t, Field: st.TargetField(), Policy: policy,
		IDs: map[string]string{}, Keys: map[string]string{},
		T0: now.Add(-10 * 24 * time.Hour), Older: now.Add(-11 * 24 * time.Hour), Newer: now.Add(-9 * 24 * time.Hour)}
	org := h.Org(t)
	for _, p := range people {
		if p.sf != nil {
			r := sandbox.Record{Type: p.typ, Email: p.name + "@example.com", SystemModstamp: p.sfAt(s)}
			if sales {
				r.CustomOptOut = *p.sf
			} else {
				r.HasOptedOutOfEmail = *p.sf
			}
			s.IDs[p.name] = org.Put(r).ID
			if p.deleted {
				if err := org.Delete(s.IDs[p.name]); err != nil {
					h.T.Fatal(err)
				}
			}
		}
		if !p.ledger {
			continue
		}
		key := optout.Key(t, "sc-"+p.name, "")
		s.Keys[p.name] = key
		e := optout.Entry{Tenant: t, SalesConnectID: "sc-" + p.name, OptedOut: p.optedOut, DecidedAt: s.T0,
			DecidedBy: "evt-" + p.name, Source: "EMAIL_LINK", Field: s.Field, State: optout.StatePending}
		if !p.noID {
			e.SalesforceID, e.ObjectType = s.IDs[p.name], p.typ
		} else {
			e.State = optout.StateParked
		}
		if p.confirm {
			e.Confirmed, e.ConfirmedAt, e.SetByUs, e.State = Ptr(true), s.T0, true, optout.StateSynced
		}
		if !p.optedOut {
			e.State = optout.StateSynced
		}
		h.PutEntry(key, e)
	}
	return s
}

// WantCounts is what every run of the scenario reports.
func (s *Scenario) WantCounts() runs.Counts {
	c := runs.Counts{
		SalesforceOptOuts: 5, LedgerEntries: 11, LedgerOptOuts: 8,
		InBoth: 2, Unconfirmed: 1, SalesConnectOnly: 2, SalesforceOnly: 1, KnownToSalesforceOnly: 1,
		ParkedNoID: 1, ResubscribedInSalesforce: 1, ClearedBeforeOptOut: 1, ResubscribedInSalesConnect: 1,
		MissingInSalesforce: 1,
	}
	if s.Policy == tenant.PolicyLatestWins {
		c.ResubscribesApplied = 1
	} else {
		c.ResubscribesWrittenBack = 1
	}
	return c
}

// SFValue reads the tenant's field on a person's record.
func (s *Scenario) SFValue(name string) bool {
	r, ok := s.H.Org(s.Tenant).Get(s.IDs[name])
	if !ok {
		s.H.T.Fatalf("record %s missing", name)
	}
	if s.Field == tenant.StandardField {
		return r.HasOptedOutOfEmail
	}
	return r.CustomOptOut
}

// CheckFinal asserts the state an uninterrupted run leaves, on both sides.
func (s *Scenario) CheckFinal() {
	h := s.H
	h.T.Helper()
	latest := s.Policy == tenant.PolicyLatestWins
	for name, want := range map[string]bool{
		"inboth": true, "unconfirmed": true, "sconly": true, "sconly-lead": true, "sfonly": true, "known": true,
		"sfresub": !latest, "deleted": true, "scresub": true, "cleared": true, "neither": false, "stranger": false,
	} {
		if got := s.SFValue(name); got != want {
			h.T.Errorf("Salesforce %s: %s = %v; want %v", name, s.Field, got, want)
		}
	}
	type wantEntry struct {
		optedOut, confirmed, setByUs bool
		source                       string
	}
	for name, w := range map[string]wantEntry{
		"inboth":      {true, true, true, "EMAIL_LINK"},
		"unconfirmed": {true, true, false, "EMAIL_LINK"},
		"sconly":      {true, true, true, "EMAIL_LINK"},
		"sconly-lead": {true, true, true, "EMAIL_LINK"},
		"sfonly":      {true, true, false, "SALESFORCE"},
		"sfresub":     {!latest, !latest, !latest, map[bool]string{true: "SALESFORCE", false: "EMAIL_LINK"}[latest]},
		"deleted":     {true, true, true, "EMAIL_LINK"},
		"scresub":     {false, false, false, "EMAIL_LINK"},
		"cleared":     {true, true, true, "EMAIL_LINK"},
		"neither":     {false, false, false, "EMAIL_LINK"},
	} {
		e, _ := h.Entry(s.Keys[name])
		confirmed := e.Confirmed != nil && *e.Confirmed
		if e.OptedOut != w.optedOut || confirmed != w.confirmed || e.SetByUs != w.setByUs || e.Source != w.source {
			h.T.Errorf("ledger %s: optedOut=%v confirmed=%v setByUs=%v source=%s; want %+v (reason %q)",
				name, e.OptedOut, confirmed, e.SetByUs, e.Source, w, e.Reason)
		}
		if w.optedOut && w.confirmed && e.State != optout.StateSynced {
			h.T.Errorf("ledger %s: state %s; want SYNCED", name, e.State)
		}
	}
	if e, _ := h.Entry(s.Keys["sfonly"]); !e.DecidedAt.Equal(s.Newer) {
		h.T.Errorf("sfonly decided at %s; want Salesforce's SystemModstamp %s", e.DecidedAt, s.Newer)
	}
	known, _ := h.Entry(optout.Key(s.Tenant, "", s.IDs["known"]))
	if !known.OptedOut || known.SalesforceID != s.IDs["known"] || known.ObjectType != "Lead" || known.Source != "SALESFORCE" {
		h.T.Errorf("known-to-Salesforce-only entry %+v", known)
	}
	if e, _ := h.Entry(s.Keys["parked"]); !e.OptedOut || e.State != optout.StateParked {
		h.T.Errorf("parked entry changed: %+v", e)
	}
	evs, _ := h.AppliedEvents(s.Tenant)
	want := map[string]string{s.IDs["sfonly"]: "UNSUBSCRIBE", s.IDs["known"]: "UNSUBSCRIBE"}
	if latest {
		want[s.IDs["sfresub"]] = "RESUBSCRIBE"
	}
	got := map[string]string{}
	for _, ev := range evs {
		got[ev.GetPerson().GetSalesforceId()] = ev.GetAction().String()
		if ev.GetSource().String() != "SALESFORCE" {
			h.T.Errorf("applied event %s: source %s", ev.GetEventId(), ev.GetSource())
		}
	}
	if len(evs) != len(want) || len(got) != len(want) {
		h.T.Errorf("%d applied events %v; want one each %v", len(evs), got, want)
	}
	for id, a := range want {
		if got[id] != a {
			h.T.Errorf("applied event for %s: %q; want %s", id, got[id], a)
		}
	}
}
