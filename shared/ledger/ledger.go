// Package ledger keeps what optout-sync knows of each person's opt-out: one
// JetStream KV entry per person per tenant, changed only by compare-and-set,
// with every change also appended to the tenant's audit stream.
package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// State is where a person's desired opt-out value stands.
type State string

const (
	// StatePending: the desired value is known and not yet confirmed by Salesforce.
	StatePending State = "PENDING"
	// StateParked: an opt-out without a Salesforce id; pushed once an event carries one.
	StateParked State = "PARKED_NO_ID"
	// StateSynced: Salesforce confirmed the desired value (or nothing needs writing).
	StateSynced State = "SYNCED"
	// StateFailed: a permanent per-record failure; the event is in the DLQ.
	StateFailed State = "FAILED"
)

// Entry is one person of one tenant.
type Entry struct {
	Tenant         string `json:"tenant"`
	SalesConnectID string `json:"salesConnectId,omitempty"`
	SalesforceID   string `json:"salesforceId,omitempty"`
	ObjectType     string `json:"objectType,omitempty"` // Contact | Lead
	EmailHash      string `json:"emailHash,omitempty"`

	// OptedOut is the person's wish as Sales Connect knows it; DecidedAt is
	// the occurred_at of the event that set it, which orders later events.
	OptedOut  bool      `json:"optedOut"`
	DecidedAt time.Time `json:"decidedAt"`
	DecidedBy string    `json:"decidedBy,omitempty"` // event id
	Source    string    `json:"source,omitempty"`

	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"` // why the state last changed, for admins
	ChangedAt time.Time `json:"changedAt"`

	// Field is the Salesforce field the value goes to; Confirmed is the value
	// Salesforce last confirmed on it, and SetByUs whether our push set it
	// true (a sales-field resubscribe may clear only what we set).
	Field       string    `json:"field,omitempty"`
	Confirmed   *bool     `json:"confirmed,omitempty"`
	ConfirmedAt time.Time `json:"confirmedAt,omitzero"`
	SetByUs     bool      `json:"setByUs,omitempty"`

	TraceID string `json:"traceId,omitempty"`
	// LastEvent is the last event applied to the person, kept so the audit
	// trail says who acted, when and why for as long as the trail is kept
	// (the events stream keeps the events themselves only for days).
	LastEvent *Event `json:"lastEvent,omitempty"`
	// RecentEvents are the last event ids applied, so a replay beyond the
	// stream's duplicate window is recognised.
	RecentEvents []string `json:"recentEvents,omitempty"`
}

// Event is what one applied event said.
type Event struct {
	ID         string    `json:"id"`
	Action     string    `json:"action"`
	Source     string    `json:"source,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	OccurredAt time.Time `json:"occurredAt"`
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

// AuditRecord is one change, as appended to optout.v1.audit.<tenant>.
type AuditRecord struct {
	Key      string    `json:"key"`
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"`
	Entry    Entry     `json:"entry"`
}

// Ledger reads and changes entries.
type Ledger struct {
	KV jetstream.KeyValue
	JS jetstream.JetStream
	// AuditSubject maps a tenant to its audit subject.
	AuditSubject func(tenant string) string
	Now          func() time.Time
}

// ErrNotFound is returned by Get for an unknown person.
var ErrNotFound = errors.New("ledger: no entry")

// Get returns an entry and its revision.
func (l *Ledger) Get(ctx context.Context, key string) (Entry, uint64, error) {
	e, _, rev, err := l.GetFenced(ctx, key)
	return e, rev, err
}

// Update applies fn to the entry under key (a zero Entry when absent) and
// writes the result with compare-and-set, retrying on a concurrent change.
// fn returns false to leave the entry as it is. A written change is also
// appended to the audit stream. It clears any fence stamp (see fenced).
func (l *Ledger) Update(ctx context.Context, key string, fn func(e *Entry, exists bool) (bool, error)) (Entry, error) {
	return l.update(ctx, key, nil, fn)
}

// update is the compare-and-set loop of Update and FencedUpdate. With a
// writer fence it refuses an entry stamped with a larger one and stamps its
// own; without, it writes no stamp.
func (l *Ledger) update(ctx context.Context, key string, writerFence *uint64, fn func(e *Entry, exists bool) (bool, error)) (Entry, error) {
	for attempt := 0; ; attempt++ {
		cur, curFence, rev, err := l.GetFenced(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Entry{}, err
		}
		var stamp uint64
		if writerFence != nil {
			if curFence > *writerFence {
				return cur, fmt.Errorf("%w (%s: entry fence %d, writer fence %d)", ErrFenced, key, curFence, *writerFence)
			}
			stamp = *writerFence
		}
		next := cur
		next.RecentEvents = append([]string(nil), cur.RecentEvents...)
		changed, err := fn(&next, exists)
		if err != nil || !changed {
			return cur, err
		}
		next.ChangedAt = l.now()
		data, err := json.Marshal(fenced{Entry: next, Fence: stamp})
		if err != nil {
			return Entry{}, fmt.Errorf("ledger encode %s: %w", key, err)
		}
		var newRev uint64
		if exists {
			newRev, err = l.KV.Update(ctx, key, data, rev)
		} else {
			newRev, err = l.KV.Create(ctx, key, data)
		}
		if isConflict(err) && attempt < 20 {
			continue
		}
		if err != nil {
			return Entry{}, fmt.Errorf("ledger write %s: %w", key, err)
		}
		if err := l.audit(ctx, key, newRev, next, writerFence); err != nil {
			return next, err
		}
		return next, nil
	}
}

// audit appends a change to the tenant's audit subject; a fenced writer's
// record also carries its fence.
func (l *Ledger) audit(ctx context.Context, key string, rev uint64, e Entry, writerFence *uint64) error {
	if l.JS == nil || l.AuditSubject == nil {
		return nil
	}
	var rec any = AuditRecord{Key: key, Revision: rev, At: e.ChangedAt, Entry: e}
	if writerFence != nil {
		rec = FencedAuditRecord{AuditRecord: rec.(AuditRecord), Fence: *writerFence}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("audit encode %s: %w", key, err)
	}
	msg := nats.NewMsg(l.AuditSubject(e.Tenant))
	msg.Data = data
	msg.Header.Set("Content-Type", "application/json")
	// key+revision identifies the change, so a retried append is dropped.
	if _, err := l.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s@%d", key, rev))); err != nil {
		return fmt.Errorf("audit append %s: %w", key, err)
	}
	return nil
}

func (l *Ledger) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}

// isConflict recognises a lost compare-and-set: ErrKeyRevisionMismatch from
// Update, ErrKeyExists from a racing Create, and the raw API codes 10071
// (wrong last sequence) and 10164 (clustered) that older paths surface.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164)
}
