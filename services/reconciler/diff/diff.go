// Package diff classifies every person of a tenant by comparing the ledger
// (Sales Connect's side, streamed entry by entry) with the set of Contacts
// and Leads whose opt-out field is true in Salesforce, and plans the writes
// that make both sides agree. It does no I/O: the engine feeds it and
// carries the plan out, so the rules can be read and tested in one place.
//
// The rules, for a ledger entry with Salesforce id X (S is the Salesforce
// true-set, "confirmed" means the ledger recorded Salesforce showing true on
// the tenant's current field):
//
//	opted out, X in S:      in both (ledger confirmed if it was not yet)
//	opted out, X not in S:  confirmed → look X up (an opt-out is never
//	                        reverted by absence): missing → reported only;
//	                        false and changed after the opt-out → a
//	                        Salesforce-side resubscribe (latest-wins: applied
//	                        to Sales Connect; optout-wins: written back);
//	                        false but not changed since → written back.
//	                        Not confirmed → opted out in Sales Connect only:
//	                        written to Salesforce.
//	not opted out, X in S:  Salesforce changed after the ledger's decision →
//	                        opted out in Salesforce only: applied to Sales
//	                        Connect; else Sales Connect's explicit
//	                        resubscribe is newer: reported, left.
//	no id:                  parked (opted out) or nothing.
//
// Members of S no entry referred to are known to Salesforce only: recorded
// as sf.<X> entries and announced to Sales Connect; except a Contact a
// Lead of the ledger was converted into (the engine finds them, Converted
// classifies them): that person follows the conversion and is compared on
// the Contact, as above.
package diff

import (
	"slices"
	"strings"

	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Why says why a record is written to Salesforce.
type Why uint8

// Reasons for a Salesforce write.
const (
	SalesConnectOnly    Why = iota // opted out in Sales Connect only
	WrittenBack                    // a Salesforce-side resubscribe overridden (optout-wins)
	ClearedBeforeOptOut            // cleared in Salesforce before the opt-out
)

// SFWrite sets the field true on one record; Key is the ledger entry to
// confirm afterwards.
type SFWrite struct {
	ID  idset.ID
	Key string
	Why Why
}

// OpKind is a change to the Sales Connect side.
type OpKind uint8

// Sales Connect side changes.
const (
	// ApplyOptOut: opted out in Salesforce only; the entry becomes an
	// opt-out decided at At (the record's SystemModstamp) and an event
	// tells Sales Connect.
	ApplyOptOut OpKind = iota + 1
	// RecordOptOut: known to Salesforce only; the sf.<id> entry is created.
	RecordOptOut
	// ApplyResubscribe: a Salesforce-side resubscribe under latest-wins.
	ApplyResubscribe
	// Confirm: in both; the ledger records Salesforce's confirmation.
	Confirm
	// FollowConversion: the person's Lead was converted into the Contact
	// ID; the entry only follows it (any other op carries FromLead).
	FollowConversion
)

func (k OpKind) String() string {
	switch k {
	case ApplyOptOut:
		return "apply-opt-out"
	case RecordOptOut:
		return "record-opt-out"
	case ApplyResubscribe:
		return "apply-resubscribe"
	case Confirm:
		return "confirm"
	case FollowConversion:
		return "follow-conversion"
	}
	return "unknown"
}

// LedgerOp is one planned Sales Connect side change.
type LedgerOp struct {
	Kind OpKind
	Key  string
	ID   idset.ID
	At   int64 // Salesforce's SystemModstamp, Unix ms (ApplyOptOut, RecordOptOut, ApplyResubscribe)
	// FromLead, when set, is the converted Lead the entry points at: the
	// entry follows the conversion to the Contact ID before the op applies.
	FromLead idset.ID
}

// Follows reports whether op first follows a Lead's conversion.
func (op LedgerOp) Follows() bool { return op.FromLead != idset.ID{} }

// Lookup is a confirmed opt-out absent from the true-set, to be read by id.
type Lookup struct {
	ID        idset.ID
	Key       string
	DecidedAt int64 // the ledger's decision, Unix ms
}

// Found is what a lookup read of a record.
type Found struct {
	Value    bool
	Modstamp int64
}

// Plan is everything the diff wants written.
type Plan struct {
	SFWrites  []SFWrite
	LedgerOps []LedgerOp
	Lookups   []Lookup
}

// Classifier is one diff. Feed every ledger entry to Add, then call Finish,
// then Resolve with the lookups' results.
type Classifier struct {
	Counts runs.Counts
	Plan   Plan

	tenant string
	field  string
	policy string
	sf     *idset.Set
	// converted are the persons Converted found, by key.
	converted map[string]conversion
}

// New starts a diff of tenant's ledger against sf (the true-set of field).
func New(tenantID, field, policy string, sf *idset.Set) *Classifier {
	c := &Classifier{tenant: tenantID, field: field, policy: policy, sf: sf}
	c.Counts.SalesforceOptOuts = int64(sf.Len())
	return c
}

// Add classifies one ledger entry.
func (c *Classifier) Add(key string, e optout.Entry) {
	c.Counts.LedgerEntries++
	// The opt-out in force on the field (Email Opt Out stays wanted after a
	// Sales Connect resubscribe: it is never cleared from here).
	optedOut := e.Wanted(c.field)
	if optedOut {
		c.Counts.LedgerOptOuts++
	}
	if e.SalesforceID == "" {
		if optedOut {
			c.Counts.ParkedNoID++
		}
		return
	}
	id, err := idset.Parse(e.SalesforceID)
	if err != nil {
		c.Counts.MalformedIDs++
		return
	}
	i, inSF := c.sf.Find(id)
	confirmed := e.Confirmed != nil && *e.Confirmed && e.Field == c.field
	decided := e.DecidedAt.UnixMilli()
	switch {
	case optedOut && inSF:
		c.sf.Mark(i)
		c.Counts.InBoth++
		if !confirmed || e.State != optout.StateSynced {
			c.Counts.Unconfirmed++
			c.Plan.LedgerOps = append(c.Plan.LedgerOps, LedgerOp{Kind: Confirm, Key: key, ID: id})
		}
	case optedOut && confirmed:
		c.Plan.Lookups = append(c.Plan.Lookups, Lookup{ID: id, Key: key, DecidedAt: decided})
	case optedOut:
		c.Counts.SalesConnectOnly++
		c.Plan.SFWrites = append(c.Plan.SFWrites, SFWrite{ID: id, Key: key, Why: SalesConnectOnly})
	case inSF:
		c.sf.Mark(i)
		if _, mod := c.sf.At(i); mod > decided {
			c.Counts.SalesforceOnly++
			c.Plan.LedgerOps = append(c.Plan.LedgerOps, LedgerOp{Kind: ApplyOptOut, Key: key, ID: id, At: mod})
		} else {
			c.Counts.ResubscribedInSalesConnect++
		}
	}
}

// UnreferencedContacts lists the Contacts of the true-set no entry
// referred to (call before Finish): one may be a Lead the ledger knows,
// converted (see Converted).
func (c *Classifier) UnreferencedContacts() []idset.ID {
	var out []idset.ID
	c.sf.Unmarked(func(i int) {
		if id, _ := c.sf.At(i); id.Type() == sfid.Contact {
			out = append(out, id)
		}
	})
	return out
}

// Converted classifies the person under key, whose entry e points at lead,
// which Salesforce converted into contact (a member of the true-set no
// entry referred to; call before Finish): the person follows the
// conversion, as the push does, and is then compared on the Contact. The
// person was already counted by Add when the Lead itself was in the
// true-set; otherwise it is counted here, in the class the Contact puts it.
func (c *Classifier) Converted(lead, contact idset.ID, key string, e optout.Entry) {
	i, ok := c.sf.Find(contact)
	if !ok || c.sf.Marked(i) || e.MergedInto != "" || !sameID(e.SalesforceID, lead) {
		return
	}
	c.sf.Mark(i)
	c.Counts.LeadsConverted++
	_, leadInSF := c.sf.Find(lead)
	_, mod := c.sf.At(i)
	if c.converted == nil {
		c.converted = map[string]conversion{}
	}
	c.converted[key] = conversion{op: LedgerOp{Key: key, ID: contact, FromLead: lead, At: mod},
		wanted: e.Wanted(c.field), decided: e.DecidedAt.UnixMilli(), leadInSF: leadInSF}
}

// conversion is a person Converted found, applied to the plan by Finish.
type conversion struct {
	op       LedgerOp
	wanted   bool
	decided  int64
	leadInSF bool
	// What Add planned for the person against the Lead.
	hadWrite, hadConfirm bool
}

// applyConversions replaces, in one pass over the plan, what Add planned
// for the converted persons against their Leads with their ops on the
// Contacts, and counts them in the class the Contact puts them.
func (c *Classifier) applyConversions() {
	if len(c.converted) == 0 {
		return
	}
	c.Plan.SFWrites = slices.DeleteFunc(c.Plan.SFWrites, func(w SFWrite) bool {
		cv, ok := c.converted[w.Key]
		if ok {
			cv.hadWrite = true
			c.converted[w.Key] = cv
		}
		return ok
	})
	c.Plan.LedgerOps = slices.DeleteFunc(c.Plan.LedgerOps, func(o LedgerOp) bool {
		cv, ok := c.converted[o.Key]
		if ok && o.Kind == Confirm {
			cv.hadConfirm = true
			c.converted[o.Key] = cv
		}
		return ok
	})
	c.Plan.Lookups = slices.DeleteFunc(c.Plan.Lookups, func(l Lookup) bool { _, ok := c.converted[l.Key]; return ok })
	for _, cv := range c.converted {
		op := cv.op
		switch {
		case cv.wanted:
			// Opted out on both sides once it points at the Contact, where
			// its confirmation is recorded (following clears the Lead's).
			if !cv.leadInSF {
				if cv.hadWrite {
					c.Counts.SalesConnectOnly--
				}
				c.Counts.InBoth++
			}
			if !cv.hadConfirm {
				c.Counts.Unconfirmed++
			}
			op.Kind, op.At = Confirm, 0
		case op.At > cv.decided:
			if !cv.leadInSF {
				c.Counts.SalesforceOnly++
			}
			op.Kind = ApplyOptOut
		default:
			if !cv.leadInSF {
				c.Counts.ResubscribedInSalesConnect++
			}
			op.Kind, op.At = FollowConversion, 0
		}
		c.Plan.LedgerOps = append(c.Plan.LedgerOps, op)
	}
	c.converted = nil
}

func sameID(s string, id idset.ID) bool {
	k, err := idset.Parse(s)
	return err == nil && k == id
}

// Finish applies the conversions found, then turns the true-set members no
// entry referred to into known-to-Salesforce-only records.
func (c *Classifier) Finish() {
	c.applyConversions()
	c.sf.Unmarked(func(i int) {
		id, mod := c.sf.At(i)
		c.Counts.KnownToSalesforceOnly++
		c.Plan.LedgerOps = append(c.Plan.LedgerOps, LedgerOp{
			Kind: RecordOptOut, Key: optout.Key(c.tenant, "", id.String()), ID: id, At: mod,
		})
	})
}

// LookupIDs lists the ids to read by id (deduplicated).
func (c *Classifier) LookupIDs() []idset.ID {
	ids := make([]idset.ID, 0, len(c.Plan.Lookups))
	for _, l := range c.Plan.Lookups {
		ids = append(ids, l.ID)
	}
	slices.SortFunc(ids, idset.Compare)
	return slices.Compact(ids)
}

// Resolve classifies the looked-up opt-outs with what the lookup found
// (ok false: the record could not be read), then orders the plan: Salesforce
// writes by id (Contacts first), so a resumed run walks them in the same order.
func (c *Classifier) Resolve(found func(idset.ID) (Found, bool)) {
	for _, l := range c.Plan.Lookups {
		f, ok := found(l.ID)
		switch {
		case !ok:
			c.Counts.MissingInSalesforce++
		case f.Value: // set true again since the true-set was read
			c.Counts.InBoth++
		case f.Modstamp > l.DecidedAt:
			c.Counts.ResubscribedInSalesforce++
			if c.policy == tenant.PolicyLatestWins {
				c.Counts.ResubscribesApplied++
				c.Plan.LedgerOps = append(c.Plan.LedgerOps, LedgerOp{Kind: ApplyResubscribe, Key: l.Key, ID: l.ID, At: f.Modstamp})
			} else {
				c.Counts.ResubscribesWrittenBack++
				c.Plan.SFWrites = append(c.Plan.SFWrites, SFWrite{ID: l.ID, Key: l.Key, Why: WrittenBack})
			}
		default:
			c.Counts.ClearedBeforeOptOut++
			c.Plan.SFWrites = append(c.Plan.SFWrites, SFWrite{ID: l.ID, Key: l.Key, Why: ClearedBeforeOptOut})
		}
	}
	c.Plan.Lookups = nil
	slices.SortFunc(c.Plan.SFWrites, func(a, b SFWrite) int {
		if x := idset.Compare(a.ID, b.ID); x != 0 {
			return x
		}
		return strings.Compare(a.Key, b.Key)
	})
	slices.SortFunc(c.Plan.LedgerOps, func(a, b LedgerOp) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// Resubscribes is what the mass-resubscribe guard counts: Salesforce-side
// resubscribes the run would apply to Sales Connect.
func (c *Classifier) Resubscribes() int64 { return c.Counts.ResubscribesApplied }

// SFRecords is the number of distinct records the plan writes to Salesforce.
func (p *Plan) SFRecords() int {
	n := 0
	for i, w := range p.SFWrites {
		if i == 0 || w.ID != p.SFWrites[i-1].ID {
			n++
		}
	}
	return n
}
