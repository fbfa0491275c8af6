package clustertest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/refmodel"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// person is one person of the burst: a Sales Connect id and the Salesforce
// record seeded for them.
type person struct {
	tenant, sc, sfID, objType string
	events                    []*optoutv1.OptOutEvent
}

// publication is one message of the burst: an event, under its own
// Nats-Msg-Id or, for a redelivery beyond the duplicate window, another.
type publication struct {
	ev     *optoutv1.OptOutEvent
	msgID  string
	asJSON bool
}

// burst is what the publisher sends, shuffled.
type burst struct {
	pubs               []publication
	events             int // distinct events
	sameID, newID      int // duplicates under the same and another Nats-Msg-Id
	sfOnly, scOnly     int // events carrying one of the person's ids
	ties, optOuts, res int
}

// plan gives every person a random history of opt-outs and resubscribes
// until there are at least minEvents events: random past timestamps (some
// tied with an earlier event of the other action), most events carrying both
// ids and some only one, a few published twice under the same Nats-Msg-Id
// (JetStream drops them) or under another (the consumer must), all shuffled.
func plan(rng *rand.Rand, persons []*person, minEvents int, now time.Time) burst {
	var b burst
	now = now.Truncate(time.Second)
	add := func(p *person) {
		n := len(p.events)
		ev := &optoutv1.OptOutEvent{
			EventId:  fmt.Sprintf("%s-%s-%d", p.tenant, p.sc, n),
			TenantId: p.tenant,
			Person:   &optoutv1.Person{SalesConnectId: p.sc, SalesforceId: p.sfID, Email: p.sc + "@example.com", ObjectType: objectType(p.objType)},
			Action:   optoutv1.Action_UNSUBSCRIBE,
			Source:   optoutv1.Source_EMAIL_LINK,
		}
		if rng.IntN(2) == 0 {
			ev.Action, ev.Source = optoutv1.Action_RESUBSCRIBE, optoutv1.Source_SALES_USER
		}
		// Minutes over the last 30 days, never in the future: the ordering
		// time is then occurredAt itself (a stamp later than its storage
		// would be clamped to it, which the scenarios of issue 10 cover).
		at := now.Add(-time.Hour - time.Duration(rng.Int64N(30*24*60))*time.Minute)
		if n > 0 && rng.Float64() < 0.08 {
			// A tie with an earlier event of the other action: the
			// opt-out must win it.
			prev := p.events[rng.IntN(n)]
			at = prev.OccurredAt.AsTime()
			ev.Action = optoutv1.Action_UNSUBSCRIBE + optoutv1.Action_RESUBSCRIBE - prev.Action
			b.ties++
		}
		ev.OccurredAt = timestamppb.New(at)
		if n > 0 { // the first event carries both ids, so the person links
			switch x := rng.Float64(); {
			case x < 0.08:
				ev.Person.SalesConnectId, ev.Person.Email = "", ""
				b.sfOnly++
			case x < 0.15:
				ev.Person.SalesforceId, ev.Person.ObjectType = "", optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
				b.scOnly++
			}
		}
		if ev.Action == optoutv1.Action_UNSUBSCRIBE {
			b.optOuts++
		} else {
			b.res++
		}
		p.events = append(p.events, ev)
		b.events++
		asJSON := rng.Float64() < 0.1
		b.pubs = append(b.pubs, publication{ev: ev, msgID: ev.EventId, asJSON: asJSON})
		switch x := rng.Float64(); {
		case x < 0.03:
			b.pubs = append(b.pubs, publication{ev: ev, msgID: ev.EventId, asJSON: asJSON})
			b.sameID++
		case x < 0.05:
			b.pubs = append(b.pubs, publication{ev: ev, msgID: ev.EventId + "-again", asJSON: !asJSON})
			b.newID++
		}
	}
	for _, p := range persons {
		add(p)
	}
	for b.events < minEvents {
		add(persons[rng.IntN(len(persons))])
	}
	rng.Shuffle(len(b.pubs), func(i, j int) { b.pubs[i], b.pubs[j] = b.pubs[j], b.pubs[i] })
	return b
}

func objectType(t string) optoutv1.ObjectType {
	if t == "Lead" {
		return optoutv1.ObjectType_LEAD
	}
	return optoutv1.ObjectType_CONTACT
}

// want is the shared reference model (internal/refmodel) of one person:
// the newest wish by ordering time, an opt-out winning a tie; the sales
// field ends at it; Email Opt Out is true once any opt-out is known.
type want struct{ refmodel.Wish }

func reference(evs []*optoutv1.OptOutEvent) want {
	hist := make([]refmodel.Event, len(evs))
	for i, ev := range evs {
		hist[i] = refmodel.Event{At: ev.GetOccurredAt().AsTime(), OptOut: ev.GetAction() == optoutv1.Action_UNSUBSCRIBE}
	}
	return want{refmodel.Of(hist)}
}

// value is what Salesforce must end at on field.
func (w want) value(field string) bool { return w.Salesforce(field == tenant.StandardField) }

// ledgerMatches says how the person's entry differs from the model ("" when
// it does not).
func (w want) ledgerMatches(e ledger.Entry, p *person, field string) string {
	switch {
	case e.OptedOut != w.OptOut || !e.DecidedAt.Equal(w.DecidedAt):
		return fmt.Sprintf("wish (%t, %s), model (%t, %s)", e.OptedOut, e.DecidedAt, w.OptOut, w.DecidedAt)
	case !e.LastOptOutAt.Equal(w.LastOptOutAt):
		return fmt.Sprintf("last opt-out %s, model %s", e.LastOptOutAt, w.LastOptOutAt)
	case e.SalesforceID != p.sfID:
		return fmt.Sprintf("Salesforce id %q, want %q", e.SalesforceID, p.sfID)
	case e.Dirty(field):
		return "still dirty after the drain"
	case e.State != ledger.StateSynced:
		return fmt.Sprintf("state %s (%s)", e.State, e.Reason)
	case e.Wanted(field) != w.value(field):
		return fmt.Sprintf("wants %t on %s, model %t", e.Wanted(field), field, w.value(field))
	}
	return ""
}

// flips counts the changes of a record's field over its successful writes,
// from the seeded false.
func flips(ws []sfWrite, field string) (n int, last bool) {
	for _, w := range ws {
		if w.OK && w.Field == field && w.Value != last {
			n++
			last = w.Value
		}
	}
	return n, last
}

// desiredChanges counts how often the desired Salesforce value of the
// person's record changed over the ledger changes the audit trail holds,
// from the seeded false: every change of Salesforce's value must be one of
// them. The person's keys (a Salesforce-only entry merged later, and the
// person's own) are taken together in the order of their changes, so a
// merge that brings a newer wish counts as the change it is.
func desiredChanges(trails map[string][]ledger.AuditRecord, p *person, field string) int {
	var recs []ledger.AuditRecord
	for _, rs := range trails {
		for _, r := range rs {
			if r.Entry.MergedInto == "" && r.Entry.SalesforceID == p.sfID {
				recs = append(recs, r)
			}
		}
	}
	slices.SortStableFunc(recs, func(a, b ledger.AuditRecord) int { return a.At.Compare(b.At) })
	n, last := 0, false
	for _, r := range recs {
		if v := r.Entry.Wanted(field); v != last {
			n++
			last = v
		}
	}
	return n
}

// auditGaps counts, for one key, the changes with more than one audit
// record and the changes with none: versions 1..final, each exactly once.
func auditGaps(recs []ledger.AuditRecord, final uint64) (doubles, missing int) {
	seen := map[uint64]int{}
	for _, r := range recs {
		seen[r.Entry.Version]++
	}
	for v := uint64(1); v <= final; v++ {
		if seen[v] == 0 {
			missing++
		}
	}
	for _, n := range seen {
		doubles += n - 1
	}
	return doubles, missing
}
