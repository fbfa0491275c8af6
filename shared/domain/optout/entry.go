// Package optout is the domain of optout-sync, apart from its storage: a
// person's entry, the pure transitions that are the only way it changes
// (machine.go), its target (what Salesforce should hold, and whether a
// write is due), writers' claims and the keys of persons. It imports
// nothing of ours and nothing of NATS; shared/store/ledger stores it.
package optout

import (
	"encoding/base64"
	"time"
)

// StandardField is Salesforce's Email Opt Out field, shared with marketing:
// only ever set from here, never cleared.
const StandardField = "HasOptedOutOfEmail"

// State is where a person's desired opt-out value stands.
type State string

const (
	// StatePending: the desired value is known and not yet confirmed by Salesforce.
	StatePending State = "PENDING"
	// StateParked: an opt-out without a Salesforce id; pushed once an event carries one.
	StateParked State = "PARKED_NO_ID"
	// StateSynced: Salesforce confirmed the desired value (or nothing needs writing).
	StateSynced State = "SYNCED"
	// StateFailed: a permanent per-record failure, or retries past the
	// horizon; the deciding event is in the DLQ. A new event or a replay
	// asks again.
	StateFailed State = "FAILED"
)

// Entry is one person of one tenant. Only the transitions of machine.go
// change it.
type Entry struct {
	Tenant         string `json:"tenant"`
	SalesConnectID string `json:"salesConnectId,omitempty"`
	SalesforceID   string `json:"salesforceId,omitempty"`
	ObjectType     string `json:"objectType,omitempty"` // Contact | Lead
	EmailHash      string `json:"emailHash,omitempty"`
	// ConvertedFrom are Lead ids converted into SalesforceID (a Contact):
	// events that still carry them reach this person and its Contact.
	ConvertedFrom []string `json:"convertedFrom,omitempty"`

	// OptedOut is the person's latest wish; DecidedAt its ordering time (see
	// EventInput.OrderAt), DecidedBy the event that expressed it.
	OptedOut  bool      `json:"optedOut"`
	DecidedAt time.Time `json:"decidedAt"`
	DecidedBy string    `json:"decidedBy,omitempty"` // event id
	Source    string    `json:"source,omitempty"`
	// LastOptOutAt is the ordering time of the newest opt-out known, and
	// ClearedAt of the newest clear of HasOptedOutOfEmail learnt from
	// Salesforce under latest-wins: Email Opt Out is wanted true while an
	// opt-out is known that no such clear outranks.
	LastOptOutAt time.Time `json:"lastOptOutAt,omitzero"`
	ClearedAt    time.Time `json:"clearedAt,omitzero"`

	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"` // why the state last changed, for admins
	ChangedAt time.Time `json:"changedAt"`

	// Field is the Salesforce field Confirmed refers to; Confirmed is the
	// value Salesforce last confirmed there (nil: unknown), and SetByUs
	// whether our push may have set it true (a sales-field resubscribe
	// clears only what we may have set).
	Field       string    `json:"field,omitempty"`
	Confirmed   *bool     `json:"confirmed,omitempty"`
	ConfirmedAt time.Time `json:"confirmedAt,omitzero"`
	SetByUs     bool      `json:"setByUs,omitempty"`

	Retry Retry `json:"retry,omitzero"`

	// Writing is the claim of the sales-field write in flight, if any:
	// while it holds, no other writer (another pusher replica, the
	// reconciler) writes this person, so our writes land in the order they
	// were decided and an older one never lands over a newer (claim.go).
	Writing *Claim `json:"writing,omitempty"`

	TraceID string `json:"traceId,omitempty"`
	// TraceParent is the W3C context of the deciding event's ingest span, so
	// the push's Salesforce call joins the opt-out's trace.
	TraceParent string `json:"traceParent,omitempty"`
	// LastEvent is the last event applied to the person, kept so the audit
	// trail says who acted, when and why for as long as the trail is kept
	// (the events stream keeps the events themselves only for days).
	LastEvent *Event `json:"lastEvent,omitempty"`
	// RecentEvents are the last event ids applied, so a replay beyond the
	// stream's duplicate window is recognised.
	RecentEvents []string `json:"recentEvents,omitempty"`

	// MergedInto retires this entry: the person lives under that key.
	MergedInto string `json:"mergedInto,omitempty"`
	// Version counts the entry's changes; each has one audit record.
	Version uint64 `json:"version"`
}

// Event is what one applied event said.
type Event struct {
	ID         string    `json:"id"`
	Action     string    `json:"action"`
	Source     string    `json:"source,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	OccurredAt time.Time `json:"occurredAt"`
	// OrderedAt is set when occurredAt was later than the event's storage
	// time and the event was ordered by that instead.
	OrderedAt time.Time `json:"orderedAt,omitzero"`
}

const recentEventsKept = 16

// Seen reports whether eventID was already applied.
func (e *Entry) Seen(eventID string) bool {
	for _, id := range e.RecentEvents {
		if id == eventID {
			return true
		}
	}
	return false
}

// Remember records eventID as applied.
func (e *Entry) Remember(eventID string) {
	if e.Seen(eventID) {
		return
	}
	e.RecentEvents = append(e.RecentEvents, eventID)
	if n := len(e.RecentEvents); n > recentEventsKept {
		e.RecentEvents = e.RecentEvents[n-recentEventsKept:]
	}
}

// Key is the KV key of a person: by Sales Connect id when known (it never
// changes), else by the 18-character Salesforce id.
func Key(tenant, salesConnectID, salesforceID string) string {
	if salesConnectID != "" {
		return tenant + ".sc." + base64.RawURLEncoding.EncodeToString([]byte(salesConnectID))
	}
	return tenant + ".sf." + salesforceID
}
