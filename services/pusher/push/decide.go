package push

import (
	"fmt"
	"time"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/logx"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// write is what Salesforce must be told about one person.
type write struct {
	needed bool
	value  bool
}

// applyEvent folds one event into a person's ledger entry: the one place that
// decides ordering and what a resubscribe may undo. An opt-out is never
// reverted by an older or implicit event; a resubscribe wins only when it is
// strictly newer than the opt-out it overrides.
func applyEvent(e *ledger.Entry, exists bool, ev *optoutv1.OptOutEvent, field, traceID string) (changed bool) {
	if exists && e.Seen(ev.GetEventId()) {
		return false // a replay beyond JetStream's duplicate window
	}
	p := ev.GetPerson()
	occurred := ev.GetOccurredAt().AsTime().UTC()
	e.Tenant = ev.GetTenantId()
	if e.SalesConnectID == "" {
		e.SalesConnectID = p.GetSalesConnectId()
	}
	if id := p.GetSalesforceId(); id != "" && id != e.SalesforceID {
		e.SalesforceID = id
		e.ObjectType = objectTypeName(p.GetObjectType())
		e.Confirmed = nil // a new record: nothing confirmed on it yet
		e.SetByUs = false
	}
	if p.GetEmail() != "" {
		e.EmailHash = logx.HashEmail(p.GetEmail())
	}
	if e.Field != field {
		// The tenant chose another field: what was confirmed on the old
		// one says nothing about the new one.
		e.Field, e.Confirmed, e.SetByUs = field, nil, false
	}
	e.Remember(ev.GetEventId())
	e.TraceID = traceID
	e.LastEvent = &ledger.Event{ID: ev.GetEventId(), Action: ev.GetAction().String(), Source: ev.GetSource().String(),
		Reason: ev.GetReason(), OccurredAt: occurred}

	switch ev.GetAction() {
	case optoutv1.Action_UNSUBSCRIBE:
		if exists && !e.OptedOut && e.DecidedAt.After(occurred) {
			e.Reason = fmt.Sprintf("opt-out of %s ignored: older than the resubscribe of %s", stamp(occurred), stamp(e.DecidedAt))
			return true
		}
		e.OptedOut = true
		if occurred.After(e.DecidedAt) {
			e.DecidedAt, e.DecidedBy, e.Source = occurred, ev.GetEventId(), ev.GetSource().String()
		}
	case optoutv1.Action_RESUBSCRIBE:
		switch {
		case !exists || !e.OptedOut:
			e.Reason = "resubscribe recorded: there was no opt-out to undo"
			if occurred.After(e.DecidedAt) {
				e.DecidedAt, e.DecidedBy, e.Source = occurred, ev.GetEventId(), ev.GetSource().String()
			}
			settle(e, field)
			return true
		case !occurred.After(e.DecidedAt):
			e.Reason = fmt.Sprintf("resubscribe of %s ignored: not newer than the opt-out of %s", stamp(occurred), stamp(e.DecidedAt))
			return true
		}
		e.OptedOut = false
		e.DecidedAt, e.DecidedBy, e.Source = occurred, ev.GetEventId(), ev.GetSource().String()
	}
	settle(e, field)
	return true
}

// settle sets the entry's state and reason from what Salesforce still needs.
func settle(e *ledger.Entry, field string) {
	w := pending(e, field)
	switch {
	case e.OptedOut && e.SalesforceID == "":
		e.State, e.Reason = ledger.StateParked, "no Salesforce id yet: pushed as soon as an event for this person carries one"
	case w.needed:
		e.State, e.Reason = ledger.StatePending, fmt.Sprintf("%s=%t to be written", field, w.value)
	case e.OptedOut:
		e.State, e.Reason = ledger.StateSynced, "Salesforce already shows the opt-out"
	case field == tenant.StandardField:
		e.State, e.Reason = ledger.StateSynced, "resubscribed: HasOptedOutOfEmail is shared with marketing, so it is never cleared from here"
	case e.SalesforceID == "":
		e.State, e.Reason = ledger.StateSynced, "resubscribed: no Salesforce record to clear"
	default:
		e.State, e.Reason = ledger.StateSynced, "resubscribed: "+field+" was not set by optout-sync, so it is left as it is"
	}
}

// pending says what must still be written to Salesforce for an entry.
func pending(e *ledger.Entry, field string) write {
	if e.SalesforceID == "" || e.Field != field {
		return write{}
	}
	confirmed := e.Confirmed != nil
	if e.OptedOut {
		return write{needed: !confirmed || !*e.Confirmed, value: true}
	}
	// Only our own mark on the sales field may be cleared; the standard
	// field is shared with marketing and never cleared from here.
	if field != tenant.StandardField && e.SetByUs && confirmed && *e.Confirmed {
		return write{needed: true, value: false}
	}
	return write{}
}

func objectTypeName(t optoutv1.ObjectType) string {
	switch t {
	case optoutv1.ObjectType_CONTACT:
		return "Contact"
	case optoutv1.ObjectType_LEAD:
		return "Lead"
	}
	return ""
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
