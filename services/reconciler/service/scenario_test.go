package service_test

import (
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

var noSpan trace.SpanContext

// scenario is a tenant seeded with one person of every class of the diff.
type scenario struct {
	h      *harness
	tenant string
	field  string
	policy string
	ids    map[string]string // person → 18-character Salesforce id
	keys   map[string]string // person → ledger key
	t0     time.Time         // the ledger's decisions
	newer  time.Time         // Salesforce edits after them
	older  time.Time         // Salesforce edits before them
}

// person describes one seeded person.
type person struct {
	name     string
	typ      string // Contact | Lead
	sf       *bool  // nil: no Salesforce record
	sfAt     func(s *scenario) time.Time
	deleted  bool
	ledger   bool // has a ledger entry
	optedOut bool
	confirm  bool // the ledger recorded Salesforce showing true
	noID     bool // the entry carries no Salesforce id
}

func ptr(b bool) *bool { return &b }

func older(s *scenario) time.Time { return s.older }
func newer(s *scenario) time.Time { return s.newer }

var people = []person{
	{name: "inboth", typ: "Contact", sf: ptr(true), sfAt: older, ledger: true, optedOut: true, confirm: true},
	{name: "unconfirmed", typ: "Contact", sf: ptr(true), sfAt: older, ledger: true, optedOut: true},
	{name: "sconly", typ: "Contact", sf: ptr(false), sfAt: older, ledger: true, optedOut: true},
	{name: "sconly-lead", typ: "Lead", sf: ptr(false), sfAt: older, ledger: true, optedOut: true},
	{name: "sfonly", typ: "Contact", sf: ptr(true), sfAt: newer, ledger: true},
	{name: "known", typ: "Lead", sf: ptr(true), sfAt: newer},
	{name: "parked", ledger: true, optedOut: true, noID: true},
	{name: "sfresub", typ: "Contact", sf: ptr(false), sfAt: newer, ledger: true, optedOut: true, confirm: true},
	{name: "deleted", typ: "Contact", sf: ptr(true), sfAt: older, deleted: true, ledger: true, optedOut: true, confirm: true},
	{name: "scresub", typ: "Contact", sf: ptr(true), sfAt: older, ledger: true},
	{name: "cleared", typ: "Contact", sf: ptr(false), sfAt: older, ledger: true, optedOut: true, confirm: true},
	{name: "neither", typ: "Contact", sf: ptr(false), sfAt: older, ledger: true},
	{name: "stranger", typ: "Lead", sf: ptr(false), sfAt: older},
}

// seed creates the scenario in org/tenant t with the given field choice
// and policy (and stores the tenant's settings).
func (h *harness) seed(t string, sales bool, policy string) *scenario {
	h.t.Helper()
	st := h.setSettings(t, func(st *tenant.Settings) {
		if sales {
			st.Field = tenant.SalesOptOut
		}
		st.ConflictPolicy = policy
	})
	now := time.Now().UTC().Truncate(time.Millisecond)
	s := &scenario{h: h, tenant: t, field: st.TargetField(), policy: policy,
		ids: map[string]string{}, keys: map[string]string{},
		t0: now.Add(-10 * 24 * time.Hour), older: now.Add(-11 * 24 * time.Hour), newer: now.Add(-9 * 24 * time.Hour)}
	org := h.org(t)
	for _, p := range people {
		if p.sf != nil {
			r := sandbox.Record{Type: p.typ, Email: p.name + "@example.com", SystemModstamp: p.sfAt(s)}
			if sales {
				r.CustomOptOut = *p.sf
			} else {
				r.HasOptedOutOfEmail = *p.sf
			}
			s.ids[p.name] = org.Put(r).ID
			if p.deleted {
				if err := org.Delete(s.ids[p.name]); err != nil {
					h.t.Fatal(err)
				}
			}
		}
		if !p.ledger {
			continue
		}
		key := optout.Key(t, "sc-"+p.name, "")
		s.keys[p.name] = key
		e := optout.Entry{Tenant: t, SalesConnectID: "sc-" + p.name, OptedOut: p.optedOut, DecidedAt: s.t0,
			DecidedBy: "evt-" + p.name, Source: "EMAIL_LINK", Field: s.field, State: optout.StatePending}
		if !p.noID {
			e.SalesforceID, e.ObjectType = s.ids[p.name], p.typ
		} else {
			e.State = optout.StateParked
		}
		if p.confirm {
			e.Confirmed, e.ConfirmedAt, e.SetByUs, e.State = ptr(true), s.t0, true, optout.StateSynced
		}
		if !p.optedOut {
			e.State = optout.StateSynced
		}
		h.putEntry(key, e)
	}
	return s
}

// wantCounts is what every run of the scenario reports.
func (s *scenario) wantCounts() runs.Counts {
	c := runs.Counts{
		SalesforceOptOuts: 5, LedgerEntries: 11, LedgerOptOuts: 8,
		InBoth: 2, Unconfirmed: 1, SalesConnectOnly: 2, SalesforceOnly: 1, KnownToSalesforceOnly: 1,
		ParkedNoID: 1, ResubscribedInSalesforce: 1, ClearedBeforeOptOut: 1, ResubscribedInSalesConnect: 1,
		MissingInSalesforce: 1,
	}
	if s.policy == tenant.PolicyLatestWins {
		c.ResubscribesApplied = 1
	} else {
		c.ResubscribesWrittenBack = 1
	}
	return c
}

// sfValue reads the tenant's field on a person's record.
func (s *scenario) sfValue(name string) bool {
	r, ok := s.h.org(s.tenant).Get(s.ids[name])
	if !ok {
		s.h.t.Fatalf("record %s missing", name)
	}
	if s.field == tenant.StandardField {
		return r.HasOptedOutOfEmail
	}
	return r.CustomOptOut
}

// checkFinal asserts the state an uninterrupted run leaves, on both sides.
func (s *scenario) checkFinal() {
	h := s.h
	h.t.Helper()
	latest := s.policy == tenant.PolicyLatestWins
	for name, want := range map[string]bool{
		"inboth": true, "unconfirmed": true, "sconly": true, "sconly-lead": true, "sfonly": true, "known": true,
		"sfresub": !latest, "deleted": true, "scresub": true, "cleared": true, "neither": false, "stranger": false,
	} {
		if got := s.sfValue(name); got != want {
			h.t.Errorf("Salesforce %s: %s = %v; want %v", name, s.field, got, want)
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
		e, _ := h.entry(s.keys[name])
		confirmed := e.Confirmed != nil && *e.Confirmed
		if e.OptedOut != w.optedOut || confirmed != w.confirmed || e.SetByUs != w.setByUs || e.Source != w.source {
			h.t.Errorf("ledger %s: optedOut=%v confirmed=%v setByUs=%v source=%s; want %+v (reason %q)",
				name, e.OptedOut, confirmed, e.SetByUs, e.Source, w, e.Reason)
		}
		if w.optedOut && w.confirmed && e.State != optout.StateSynced {
			h.t.Errorf("ledger %s: state %s; want SYNCED", name, e.State)
		}
	}
	if e, _ := h.entry(s.keys["sfonly"]); !e.DecidedAt.Equal(s.newer) {
		h.t.Errorf("sfonly decided at %s; want Salesforce's SystemModstamp %s", e.DecidedAt, s.newer)
	}
	known, _ := h.entry(optout.Key(s.tenant, "", s.ids["known"]))
	if !known.OptedOut || known.SalesforceID != s.ids["known"] || known.ObjectType != "Lead" || known.Source != "SALESFORCE" {
		h.t.Errorf("known-to-Salesforce-only entry %+v", known)
	}
	if e, _ := h.entry(s.keys["parked"]); !e.OptedOut || e.State != optout.StateParked {
		h.t.Errorf("parked entry changed: %+v", e)
	}
	evs, _ := h.appliedEvents(s.tenant)
	want := map[string]string{s.ids["sfonly"]: "UNSUBSCRIBE", s.ids["known"]: "UNSUBSCRIBE"}
	if latest {
		want[s.ids["sfresub"]] = "RESUBSCRIBE"
	}
	got := map[string]string{}
	for _, ev := range evs {
		got[ev.GetPerson().GetSalesforceId()] = ev.GetAction().String()
		if ev.GetSource().String() != "SALESFORCE" {
			h.t.Errorf("applied event %s: source %s", ev.GetEventId(), ev.GetSource())
		}
	}
	if len(evs) != len(want) || len(got) != len(want) {
		h.t.Errorf("%d applied events %v; want one each %v", len(evs), got, want)
	}
	for id, a := range want {
		if got[id] != a {
			h.t.Errorf("applied event for %s: %q; want %s", id, got[id], a)
		}
	}
}
