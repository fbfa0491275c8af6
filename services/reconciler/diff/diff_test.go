package diff_test

import (
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

var (
	t0 = time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC) // the ledger's decisions
	t1 = t0.Add(24 * time.Hour)                        // later Salesforce edits
)

func id(n int) idset.ID {
	// 003 + 11 zeros-ish digits + n, a valid 15-character Contact id.
	s := "003000000" + string(rune('0'+n/100%10)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10)) + "AAA"
	return idset.MustParse(s)
}

func entry(n int, optedOut bool, confirmed *bool, decided time.Time) optout.Entry {
	return optout.Entry{Tenant: "acme", SalesforceID: id(n).String(), OptedOut: optedOut, DecidedAt: decided,
		Field: tenant.StandardField, Confirmed: confirmed, State: optout.StateSynced}
}

func TestEveryClassUnderBothPolicies(t *testing.T) {
	yes := true
	for _, policy := range []string{tenant.PolicyOptOutWins, tenant.PolicyLatestWins} {
		t.Run(policy, func(t *testing.T) {
			var b idset.Builder
			for _, m := range []struct {
				n  int
				at time.Time
			}{{1, t0}, {2, t0}, {4, t1}, {5, t1}, {9, t0.Add(-time.Hour)}} {
				b.Add(id(m.n), m.at.UnixMilli())
			}
			c := diff.New("acme", tenant.StandardField, policy, b.Build())
			unconfirmed := entry(2, true, nil, t0)
			unconfirmed.State = optout.StatePending
			for key, e := range map[string]optout.Entry{
				"acme.sc.inboth":   entry(1, true, &yes, t0),         // 1: in both
				"acme.sc.unconf":   unconfirmed,                      // 2: in both, unconfirmed
				"acme.sc.sconly":   entry(3, true, nil, t0),          // 3: Sales Connect only
				"acme.sc.sfonly":   entry(4, false, nil, t0),         // 4: Salesforce only (newer)
				"acme.sc.resub":    entry(6, true, &yes, t0),         // 6: confirmed, now false, newer: resubscribe
				"acme.sc.missing":  entry(7, true, &yes, t0),         // 7: confirmed, now unreadable
				"acme.sc.cleared":  entry(8, true, &yes, t0),         // 8: confirmed, false, older change
				"acme.sc.scresub":  entry(9, false, nil, t0),         // 9: SC resubscribe newer than SF opt-out
				"acme.sc.neither":  entry(10, false, nil, t0),        // 10: nobody opted out
				"acme.sc.parked":   {Tenant: "acme", OptedOut: true}, // parked
				"acme.sc.badid":    {Tenant: "acme", SalesforceID: "003bad", OptedOut: true},
				"acme.sc.otherfld": func() optout.Entry { e := entry(11, true, &yes, t0); e.Field = "Other__c"; return e }(), // confirmed on another field: SC only
			} {
				c.Add(key, e)
			}
			c.Finish() // 5: known to Salesforce only
			if got := c.LookupIDs(); len(got) != 3 {
				t.Fatalf("lookups %v; want ids 6, 7, 8", got)
			}
			c.Resolve(func(x idset.ID) (diff.Found, bool) {
				switch x {
				case id(6):
					return diff.Found{Value: false, Modstamp: t1.UnixMilli()}, true
				case id(8):
					return diff.Found{Value: false, Modstamp: t0.Add(-time.Hour).UnixMilli()}, true
				}
				return diff.Found{}, false
			})

			want := runs.Counts{
				SalesforceOptOuts: 5, LedgerEntries: 12, LedgerOptOuts: 9,
				InBoth: 2, Unconfirmed: 1, SalesConnectOnly: 2, SalesforceOnly: 1, KnownToSalesforceOnly: 1,
				ParkedNoID: 1, MalformedIDs: 1, ResubscribedInSalesforce: 1, ClearedBeforeOptOut: 1,
				ResubscribedInSalesConnect: 1, MissingInSalesforce: 1,
			}
			var wantSF []idset.ID
			wantOps := map[diff.OpKind][]idset.ID{diff.Confirm: {id(2)}, diff.ApplyOptOut: {id(4)}, diff.RecordOptOut: {id(5)}}
			if policy == tenant.PolicyLatestWins {
				want.ResubscribesApplied = 1
				wantOps[diff.ApplyResubscribe] = []idset.ID{id(6)}
				wantSF = []idset.ID{id(3), id(8), id(11)}
			} else {
				want.ResubscribesWrittenBack = 1
				wantSF = []idset.ID{id(3), id(6), id(8), id(11)}
			}
			if c.Counts != want {
				t.Fatalf("counts\n got %+v\nwant %+v", c.Counts, want)
			}
			var gotSF []idset.ID
			for _, w := range c.Plan.SFWrites {
				gotSF = append(gotSF, w.ID)
			}
			if len(gotSF) != len(wantSF) {
				t.Fatalf("Salesforce writes %v; want %v", gotSF, wantSF)
			}
			for i := range wantSF {
				if gotSF[i] != wantSF[i] {
					t.Fatalf("Salesforce writes %v; want %v (sorted by id)", gotSF, wantSF)
				}
			}
			gotOps := map[diff.OpKind][]idset.ID{}
			for _, op := range c.Plan.LedgerOps {
				gotOps[op.Kind] = append(gotOps[op.Kind], op.ID)
				if op.Kind == diff.RecordOptOut && op.Key != optout.Key("acme", "", id(5).String()) {
					t.Fatalf("known-to-Salesforce-only key %s", op.Key)
				}
				if (op.Kind == diff.ApplyOptOut || op.Kind == diff.RecordOptOut) && op.At != t1.UnixMilli() {
					t.Fatalf("%s decided at %d; want the record's SystemModstamp", op.Kind, op.At)
				}
			}
			if len(gotOps) != len(wantOps) {
				t.Fatalf("ledger ops %v; want %v", gotOps, wantOps)
			}
			for k, ids := range wantOps {
				if len(gotOps[k]) != 1 || gotOps[k][0] != ids[0] {
					t.Fatalf("%s: %v; want %v", k, gotOps[k], ids)
				}
			}
			if policy == tenant.PolicyLatestWins && c.Resubscribes() != 1 || policy == tenant.PolicyOptOutWins && c.Resubscribes() != 0 {
				t.Fatalf("guard counts %d resubscribes", c.Resubscribes())
			}
		})
	}
}

// Two ledger entries for one person (the Sales Connect entry and an sf.<id>
// entry recorded earlier) become one Salesforce write.
func TestDuplicateEntriesWriteOnce(t *testing.T) {
	c := diff.New("acme", tenant.StandardField, tenant.PolicyOptOutWins, (&idset.Builder{}).Build())
	c.Add("acme.sc.x", entry(3, true, nil, t0))
	c.Add(optout.Key("acme", "", id(3).String()), entry(3, true, nil, t0))
	c.Finish()
	c.Resolve(func(idset.ID) (diff.Found, bool) { return diff.Found{}, false })
	if len(c.Plan.SFWrites) != 2 || c.Plan.SFRecords() != 1 {
		t.Fatalf("writes %d records %d; want 2 entries, 1 record", len(c.Plan.SFWrites), c.Plan.SFRecords())
	}
}

// A person the ledger knows by a Lead Salesforce converted is compared on
// the Contact it became: an opted-out person's write to the Lead gives way
// to a confirmation on the Contact, a subscribed person opted out on the
// Contact since gets the opt-out; neither Contact is taken for a new person.
func TestAConvertedLeadIsComparedOnItsContact(t *testing.T) {
	lead := func(n int) idset.ID { return idset.MustParse("00Q000000" + string(rune('0'+n)) + "00AAA") }
	var b idset.Builder
	b.Add(id(1), t1.UnixMilli()) // the Contact of Lead 1 (opted out in Sales Connect, not yet written)
	b.Add(id(2), t1.UnixMilli()) // the Contact of Lead 2, opted out in Salesforce after the decision
	b.Add(id(3), t1.UnixMilli()) // a Contact nobody knows
	c := diff.New("acme", tenant.StandardField, tenant.PolicyOptOutWins, b.Build())
	pending := optout.Entry{Tenant: "acme", SalesforceID: lead(1).String(), OptedOut: true, DecidedAt: t0, State: optout.StatePending}
	subscribed := optout.Entry{Tenant: "acme", SalesforceID: lead(2).String(), DecidedAt: t0, State: optout.StateSynced}
	c.Add("acme.sc.one", pending)
	c.Add("acme.sc.two", subscribed)
	if got := c.UnreferencedContacts(); len(got) != 3 {
		t.Fatalf("unreferenced Contacts %v; want all three", got)
	}
	c.Converted(lead(1), id(1), "acme.sc.one", pending)
	c.Converted(lead(2), id(2), "acme.sc.two", subscribed)
	c.Finish()
	c.Resolve(func(idset.ID) (diff.Found, bool) { return diff.Found{}, false })

	want := runs.Counts{SalesforceOptOuts: 3, LedgerEntries: 2, LedgerOptOuts: 1, InBoth: 1, Unconfirmed: 1, SalesforceOnly: 1, KnownToSalesforceOnly: 1, LeadsConverted: 2}
	if c.Counts != want {
		t.Errorf("counts\n got %+v\nwant %+v", c.Counts, want)
	}
	if len(c.Plan.SFWrites) != 0 {
		t.Errorf("Salesforce writes %+v; want none (the Lead's write gives way to the Contact's opt-out)", c.Plan.SFWrites)
	}
	ops := map[string]diff.LedgerOp{}
	for _, op := range c.Plan.LedgerOps {
		ops[op.Key] = op
	}
	if op := ops["acme.sc.one"]; op.Kind != diff.Confirm || op.ID != id(1) || op.FromLead != lead(1) || !op.Follows() {
		t.Errorf("op of person one %+v; want a confirmation on Contact 1 after following Lead 1", op)
	}
	if op := ops["acme.sc.two"]; op.Kind != diff.ApplyOptOut || op.ID != id(2) || op.FromLead != lead(2) || op.At != t1.UnixMilli() {
		t.Errorf("op of person two %+v; want the opt-out applied on Contact 2 after following Lead 2", op)
	}
	if op, ok := ops["acme."+"sf."+id(3).String()]; ok && op.Kind != diff.RecordOptOut {
		t.Errorf("op of the unknown Contact %+v", op)
	}
}
