package optout

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The state machine: every change of an entry is one of the pure
// transitions below, (entry, input) → entry. The store (shared/store/ledger) only
// reads, calls one of them inside a compare-and-set loop, and writes; no
// other package edits an entry.
//
// The rules that make "never lost, never silently reverted" hold whatever
// order events arrive in:
//   - A person's wish is the newest of every wish known (ordering time, and
//     on a tie the opt-out wins): a commutative, idempotent max, so the end
//     state depends on the set of events, never on their arrival order.
//   - Email Opt Out (HasOptedOutOfEmail) is shared with marketing and never
//     cleared from here: it is wanted true once any opt-out is known that is
//     not older than a Salesforce-side clear learnt under latest-wins.
//   - The sales field follows the latest wish, and is cleared only where our
//     own push may have set it.
//   - Salesforce's value is recorded as a fact only when the write was based
//     on the entry's current revision; otherwise it becomes unknown, which
//     keeps the person dirty until a write on a current revision succeeds.
//   - A write that may set the sales field for us is recorded (Attempt)
//     before it is made, so whatever happens to its answer, a later
//     resubscribe knows the mark may be ours and clears it.

// Action is what an event asks.
type Action string

// Actions.
const (
	OptOut      Action = "UNSUBSCRIBE"
	Resubscribe Action = "RESUBSCRIBE"
)

// StateRetired marks an entry merged into another person's entry; every
// reader follows MergedInto.
const StateRetired State = "RETIRED"

// Retry is the push's retry state of a person: the horizon runs from
// FirstFailure, and a held tenant (no credentials, unhealthy, quota) adds
// nothing here, so no clock runs while it waits.
type Retry struct {
	Attempts     int       `json:"attempts,omitempty"`
	FirstFailure time.Time `json:"firstFailure,omitzero"`
	NextAttempt  time.Time `json:"nextAttempt,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// EventInput is one decoded event as the state machine sees it.
type EventInput struct {
	ID             string
	Action         Action
	OccurredAt     time.Time
	StoredAt       time.Time // when JetStream stored the event; zero if unknown
	Source, Reason string
	SalesConnectID string
	SalesforceID   string // 18 characters, or ""
	ObjectType     string // Contact | Lead | ""
	EmailHash      string
	TraceID        string
	TraceParent    string
	// Replay marks an operator's replay of a dead letter: it asks a failed
	// person to be tried again even though the event is already known.
	Replay bool
}

// OrderAt is the time that orders an event: occurredAt, but never later
// than when JetStream stored it, so a publisher's fast clock cannot make a
// stamp outrank real events that come after it.
func (in EventInput) OrderAt() (at time.Time, clamped bool) {
	at = in.OccurredAt.UTC()
	if !in.StoredAt.IsZero() && at.After(in.StoredAt) {
		return in.StoredAt.UTC(), true
	}
	return at, false
}

// wish is an opt-out state with the time that orders it.
type wish struct {
	optOut bool
	at     time.Time
}

// beats reports whether w overrides c: strictly newer, or as new and an
// opt-out over a resubscribe.
func (w wish) beats(c wish) bool {
	return w.at.After(c.at) || (w.at.Equal(c.at) && w.optOut && !c.optOut)
}

func (e *Entry) wish() wish { return wish{optOut: e.OptedOut, at: e.DecidedAt} }

// foldWish folds one wish into the entry; it reports whether it won.
func (e *Entry) foldWish(w wish, decidedBy, source string, exists bool) bool {
	if w.optOut && w.at.After(e.LastOptOutAt) {
		e.LastOptOutAt = w.at
	}
	if exists && !w.beats(e.wish()) {
		return false
	}
	e.OptedOut, e.DecidedAt, e.DecidedBy, e.Source = w.optOut, w.at, decidedBy, source
	return true
}

// WantsStandard reports whether HasOptedOutOfEmail should be true: an
// opt-out is known and no Salesforce-side clear (latest-wins) is newer.
//
// A latest wish to opt out implies it (that wish outranks every clear), which
// also keeps entries written before LastOptOutAt existed right.
func (e *Entry) WantsStandard() bool {
	return e.OptedOut || (!e.LastOptOutAt.IsZero() && !e.ClearedAt.After(e.LastOptOutAt))
}

// confirmedOn is what Salesforce was last confirmed to hold on field, nil
// when unknown.
func (e *Entry) confirmedOn(field string) *bool {
	if e.Field != field {
		return nil
	}
	return e.Confirmed
}

// Target says what Salesforce should hold on field for this person and
// whether a write is due (the person is dirty). It is the one definition of
// "dirty" that ingest, the push and the reconciler share.
func (e *Entry) Target(field string) (value, write bool) {
	if e.MergedInto != "" || e.SalesforceID == "" || e.State == StateFailed {
		return false, false
	}
	conf := e.confirmedOn(field)
	if field == StandardField {
		if !e.WantsStandard() {
			return false, false // never cleared from here
		}
		return true, conf == nil || !*conf
	}
	if e.OptedOut {
		return true, conf == nil || !*conf
	}
	// Only what our push may have set is cleared; a value someone else set
	// is theirs.
	mayBeOurs := e.Field == field && e.SetByUs
	return false, mayBeOurs && (conf == nil || *conf)
}

// Dirty reports whether a write to field is due.
func (e *Entry) Dirty(field string) bool { _, w := e.Target(field); return w }

// Wanted reports whether the person's opt-out is in force on field (what
// Salesforce should end at, whether or not a write is due).
func (e *Entry) Wanted(field string) bool {
	if field == StandardField {
		return e.WantsStandard()
	}
	return e.OptedOut
}

// settle sets State and, where the transition gave none, Reason.
func (e *Entry) settle(field, reason string) {
	value, write := e.Target(field)
	switch {
	case e.MergedInto != "":
		e.State = StateRetired
		reason = "merged into " + e.MergedInto
	case e.State == StateFailed:
		// stays failed until an event or a replay asks again
	case e.SalesforceID == "" && e.Wanted(field):
		e.State = StateParked
		if reason == "" {
			reason = "no Salesforce id yet: pushed as soon as an event for this person carries one"
		}
	case write:
		e.State = StatePending
		if reason == "" {
			reason = fmt.Sprintf("%s=%t to be written", field, value)
		}
	default:
		e.State = StateSynced
		if reason == "" {
			reason = syncedReason(e, field)
		}
	}
	if reason != "" {
		e.Reason = reason
	}
}

func syncedReason(e *Entry, field string) string {
	switch {
	case field == StandardField && !e.OptedOut && e.WantsStandard():
		return "resubscribed: HasOptedOutOfEmail is shared with marketing, so it is never cleared from here"
	case e.Wanted(field) && e.SalesforceID != "":
		return "Salesforce shows the opt-out"
	case e.Wanted(field):
		return "opt-out recorded"
	case field == StandardField && e.OptedOut:
		return "opted out" // cleared in Salesforce under latest-wins
	case e.SalesforceID == "":
		return "no opt-out in force"
	case e.Field == field && e.SetByUs:
		return "resubscribed: " + field + " cleared"
	case !e.LastOptOutAt.IsZero():
		return "resubscribed: " + field + " was not set by optout-sync, so it is left as it is"
	}
	return "no opt-out in force"
}

// FoldResult says what a fold did.
type FoldResult struct {
	Changed bool
	// Clamped: the event's occurredAt was later than its storage time and
	// was ordered by the storage time instead.
	Clamped bool
	// Won: the event's wish became the person's wish.
	Won bool
}

// Fold folds one event into an entry (a zero Entry when !exists).
func Fold(e Entry, exists bool, in EventInput, field string) (Entry, FoldResult) {
	if exists && e.Seen(in.ID) {
		if in.Replay && e.State == StateFailed {
			e.State, e.Retry = "", Retry{}
			e.settle(field, "replayed: to be tried again")
			return e, FoldResult{Changed: true}
		}
		return e, FoldResult{} // a replay beyond JetStream's duplicate window
	}
	e.RecentEvents = slices.Clone(e.RecentEvents)
	at, clamped := in.OrderAt()
	if e.SalesConnectID == "" {
		e.SalesConnectID = in.SalesConnectID
	}
	linkRecord(&e, in.SalesforceID, in.ObjectType)
	if in.EmailHash != "" {
		e.EmailHash = in.EmailHash
	}
	e.Remember(in.ID)
	e.TraceID, e.TraceParent = in.TraceID, in.TraceParent
	e.LastEvent = &Event{ID: in.ID, Action: string(in.Action), Source: in.Source, Reason: in.Reason, OccurredAt: in.OccurredAt.UTC()}
	if clamped {
		e.LastEvent.OrderedAt = at
	}
	if e.State == StateFailed {
		// A new event is new work: the failure was about the old one.
		e.State, e.Retry = "", Retry{}
	}
	won := e.foldWish(wish{optOut: in.Action == OptOut, at: at}, in.ID, in.Source, exists)
	reason := ""
	switch {
	case won:
	case in.Action == OptOut:
		reason = fmt.Sprintf("opt-out of %s recorded; the person's newer resubscribe of %s stands", stamp(at), stamp(e.DecidedAt))
	default:
		reason = fmt.Sprintf("resubscribe of %s ignored: not newer than the opt-out of %s", stamp(at), stamp(e.DecidedAt))
	}
	if clamped {
		reason = fmt.Sprintf("occurredAt %s is later than the event was stored (%s): ordered by the storage time. ", stamp(in.OccurredAt), stamp(at)) + reason
	}
	e.settle(field, reason)
	return e, FoldResult{Changed: true, Clamped: clamped, Won: won}
}

// linkRecord points the entry at a Salesforce record. A Lead that was
// converted stays pointed at its Contact; any other new id is a new record,
// on which nothing is confirmed yet.
func linkRecord(e *Entry, id, objectType string) {
	if id == "" || id == e.SalesforceID || slices.Contains(e.ConvertedFrom, id) {
		return
	}
	e.SalesforceID, e.ObjectType = id, objectType
	e.Confirmed, e.ConfirmedAt, e.SetByUs, e.Field = nil, time.Time{}, false, ""
}

// Write is one attempted write of Salesforce, as the push or the
// reconciler reports it.
type Write struct {
	SalesforceID string
	Field        string
	Value        bool
	At           time.Time
	// Current: the write was based on the entry's current revision (the
	// store's compare-and-set decides this).
	Current bool
	// OK: Salesforce confirmed it.
	OK bool
	// Claim is the writer's claim on the person for a sales-field write:
	// Attempt takes it, the write's report (Wrote, Failed) releases it.
	Claim *Claim
	// FoundSet: the write's own request read the field true on the record
	// just before writing it, and the entry did not say, when the write was
	// decided, that our push may have set it: the mark is someone else's,
	// and our write of the same true leaves it theirs.
	FoundSet bool
}

// Wrote records a write of Salesforce. A confirmed write on the current
// revision becomes the confirmed value; any other (failed, or based on a
// revision that has since moved) leaves Salesforce's value unknown and
// remembers that our push may have set it, so the person stays dirty
// until a current write settles it.
func Wrote(e Entry, w Write, field string) (Entry, bool) {
	e, released := Release(e, w.Claim)
	next, changed := wrote(e, w, field)
	return next, changed || released
}

func wrote(e Entry, w Write, field string) (Entry, bool) {
	if e.SalesforceID != w.SalesforceID {
		return e, false // the person moved to another record
	}
	if w.OK && w.Current {
		v := w.Value
		ours, reason := w.Value, fmt.Sprintf("Salesforce confirmed %s=%t", w.Field, w.Value)
		if w.FoundSet && w.Value {
			// Attempt raised SetByUs in case our write set the mark; the
			// read before it shows it was already set, by someone else.
			ours, reason = false, w.Field+" is set in Salesforce (not by optout-sync)"
		}
		e.Field, e.Confirmed, e.ConfirmedAt, e.SetByUs = w.Field, &v, w.At.UTC(), ours
		e.Retry = Retry{}
		e.settle(field, reason)
		return e, true
	}
	if w.OK && e.Field == w.Field && e.Confirmed != nil && *e.Confirmed == w.Value {
		// A stale write (another replica's, from an older revision) of the
		// value already confirmed leaves Salesforce holding it. Forgetting
		// the confirmation would cost a needless rewrite after a set, and
		// after a clear would re-settle the person as "not set by
		// optout-sync, left as it is" although our clear landed.
		return e, false
	}
	if e.Field == w.Field && e.Confirmed == nil && (e.SetByUs || !w.Value) {
		// Already unknown and already marked as possibly ours: recording it
		// again would be an audit record of no change.
		return e, false
	}
	if e.Field != w.Field {
		e.Field, e.SetByUs = w.Field, false
	}
	e.Confirmed, e.ConfirmedAt = nil, time.Time{}
	e.SetByUs = e.SetByUs || w.Value
	e.settle(field, "")
	return e, true
}

// Attempt records a write of Salesforce before it is made: from then on
// Salesforce's value is unknown and our push may have set it, exactly as
// after a write whose outcome never came back (Wrote, not OK). Recorded
// first, this survives what a report after the call does not (a replica
// killed mid-call, a confirmation the ledger could not store): without it a
// mark we set looked like someone else's, and a later resubscribe left it.
// It also takes the write's claim (w.Claim, at w.At): while another
// writer's claim holds, nothing is recorded and that claim is returned, so
// the caller leaves the person until it ends. It is no change when the
// entry already says all this.
func Attempt(e Entry, w Write, field string) (Entry, bool, *Claim) {
	if e.SalesforceID != w.SalesforceID {
		return e, false, nil
	}
	if held := e.HeldAgainst(w.Claim, w.Value, w.At); held != nil {
		return e, false, held
	}
	changed := false
	if e.NeedsAttempt(w.Field, w.Value) {
		w.OK, w.Current = false, false
		e, _ = wrote(e, w, field)
		changed = true
	}
	if w.Claim != nil && (e.Writing == nil || e.Writing.ID != w.Claim.ID) {
		c := e.takeOver(*w.Claim, w.Value, w.At)
		e.Writing, changed = &c, true
		// The trail tells admins why this revision exists.
		until := c.Until
		if c.Prior.After(until) {
			until = c.Prior
		}
		e.Reason = fmt.Sprintf("writing %s=%t to Salesforce (writers of %t wait until %s)", w.Field, w.Value, !w.Value, stamp(until))
	}
	return e, changed, nil
}

// NeedsAttempt reports whether a write of value to f must be recorded
// (Attempt) before it is made: unless the entry already holds Salesforce's
// value unknown and, for a true, possibly ours. A write that lands unreported
// (its writer killed mid-call) must never leave the entry sure of a value
// Salesforce no longer holds: a clear would leave a newer opt-out looking
// written, a set would leave a mark a resubscribe never clears.
func (e *Entry) NeedsAttempt(f string, value bool) bool {
	return !(e.Field == f && e.Confirmed == nil && (e.SetByUs || !value))
}

// Observed records a value read from Salesforce (not written by us): on the
// sales field, a true someone else set is theirs, never claimed.
func Observed(e Entry, salesforceID, f string, value bool, at time.Time, field string) (Entry, bool) {
	if e.SalesforceID != salesforceID {
		return e, false
	}
	if conf := e.confirmedOn(f); conf != nil && *conf == value && (value || !e.SetByUs) {
		return e, false
	}
	if !value && e.Field == f && e.SetByUs && e.Confirmed == nil {
		// A write of ours may still land (attempted, or its answer lost):
		// a false read before it proves nothing, and taking it as fact would
		// leave that write's true unseen by a later resubscribe. Our own
		// confirmed write settles it.
		return e, false
	}
	// A true keeps SetByUs when our push may have set it (a write reported
	// failed or confirmed on a stale revision may have landed); it never
	// raises it.
	ours := e.Field == f && e.SetByUs && value
	v := value
	e.Field, e.Confirmed, e.ConfirmedAt, e.SetByUs = f, &v, at.UTC(), ours
	reason := ""
	if value && !ours {
		reason = f + " is set in Salesforce (not by optout-sync)"
	}
	e.settle(field, reason)
	return e, true
}

// Failure is a failed write, classified by the caller (shared/adapter/salesforce).
type Failure struct {
	Write     Write // what was attempted (its value may have landed)
	Permanent bool  // permanent for this record: no retry
	Err       string
	Wait      time.Duration // the backoff before the next attempt
	Now       time.Time
	Horizon   time.Duration // a retryable failure past this since the first one is given up
}

// FailOutcome says what the caller must do after a failure.
type FailOutcome struct {
	// DeadLetter: the person is given up (permanent, or past the horizon);
	// the caller copies the deciding event to the DLQ.
	DeadLetter bool
	// HorizonExceeded: given up because retries ran past the horizon.
	HorizonExceeded bool
}

// Failed records a failed write: a retryable failure schedules the next
// attempt from the entry's own retry state; a permanent one, or one past
// the horizon, fails the person until an event or a replay asks again.
func Failed(e Entry, f Failure, field string) (Entry, FailOutcome) {
	e, _ = Wrote(e, Write{SalesforceID: e.SalesforceID, Field: f.Write.Field, Value: f.Write.Value, Claim: f.Write.Claim}, field)
	now := f.Now.UTC()
	if e.Retry.FirstFailure.IsZero() {
		e.Retry.FirstFailure = now
	}
	e.Retry.Attempts++
	e.Retry.LastError = f.Err
	var out FailOutcome
	switch {
	case f.Permanent:
		e.State = StateFailed
		e.Reason = "Salesforce refused the record: " + f.Err
		out.DeadLetter = true
	case f.Horizon > 0 && now.Sub(e.Retry.FirstFailure) > f.Horizon:
		e.State = StateFailed
		e.Reason = fmt.Sprintf("still failing after the retry horizon of %s (%d attempts since %s): %s", f.Horizon, e.Retry.Attempts, stamp(e.Retry.FirstFailure), f.Err)
		out.DeadLetter, out.HorizonExceeded = true, true
	default:
		e.Retry.NextAttempt = now.Add(f.Wait)
		e.Reason = fmt.Sprintf("write failed (attempt %d), retried at %s: %s", e.Retry.Attempts, stamp(e.Retry.NextAttempt), f.Err)
	}
	return e, out
}

// Observation is what the nightly reconcile learnt from Salesforce about a
// person: the field's value and when the record last changed.
type Observation struct {
	EventID      string // deterministic per change, so a resumed run folds it once
	SalesforceID string
	ObjectType   string
	Field        string
	Value        bool
	At           time.Time // the record's SystemModstamp
	Now          time.Time
	// Via names how it was learnt, for the entry's reasons (default "the
	// nightly reconcile"; the CDC subscriber's is "Change Data Capture").
	Via string
}

// Learnt folds what Salesforce shows into the person as a wish of
// Salesforce's (ordered by its SystemModstamp, like any event) and records
// the value as observed. A clear of HasOptedOutOfEmail learnt this way
// (latest-wins) also outranks older opt-outs on that field.
func Learnt(e Entry, exists bool, o Observation, field string) (Entry, bool) {
	if exists && e.Seen(o.EventID) {
		return e, false
	}
	e.RecentEvents = slices.Clone(e.RecentEvents)
	if e.SalesforceID == "" {
		e.SalesforceID, e.ObjectType = o.SalesforceID, o.ObjectType
	}
	at := o.At.UTC()
	won := e.foldWish(wish{optOut: o.Value, at: at}, o.EventID, sourceSalesforce, exists)
	if !o.Value && o.Field == StandardField && at.After(e.ClearedAt) && !at.Before(e.LastOptOutAt) {
		e.ClearedAt = at
	}
	e.Remember(o.EventID)
	action := OptOut
	if !o.Value {
		action = Resubscribe
	}
	via := o.Via
	if via == "" {
		via = "the nightly reconcile"
	}
	e.LastEvent = &Event{ID: o.EventID, Action: string(action), Source: sourceSalesforce, OccurredAt: at,
		Reason: fmt.Sprintf("%s: %s is %t in Salesforce", strings.TrimPrefix(via, "the "), o.Field, o.Value)}
	e, _ = Observed(e, o.SalesforceID, o.Field, o.Value, o.Now, field)
	reason := fmt.Sprintf("learnt from Salesforce by %s: %s %t since %s", via, o.Field, o.Value, stamp(at))
	if !won {
		reason += "; the person's newer wish stands"
	}
	e.settle(field, reason)
	return e, true
}

// sourceSalesforce is the Source of what was learnt from Salesforce (the
// proto's Source enum name).
const sourceSalesforce = "SALESFORCE"

// ConversionFollowed points a person whose Lead was converted at the
// Contact it became; the Lead id stays an alias of the person, so its later
// events (a resubscribe too) reach the Contact.
func ConversionFollowed(e Entry, leadID, contactID, field string) (Entry, bool) {
	if e.SalesforceID != leadID || contactID == "" {
		return e, false
	}
	if !slices.Contains(e.ConvertedFrom, leadID) {
		e.ConvertedFrom = append(slices.Clone(e.ConvertedFrom), leadID)
	}
	wasOurs := e.SetByUs
	// The write that found the Lead converted is over: its claim with it.
	e.Writing = nil
	e.SalesforceID, e.ObjectType = contactID, "Contact"
	e.Confirmed, e.ConfirmedAt = nil, time.Time{}
	e.SetByUs = wasOurs
	e.settle(field, "Lead "+leadID+" was converted: its opt-out now goes to Contact "+contactID)
	return e, true
}

// Merge folds another entry of the same person (an sf.<id> entry found when
// Sales Connect first links the person) into e. Wishes merge by the same
// max as events, so merging twice changes nothing.
func Merge(e Entry, from Entry, field string) (Entry, bool) {
	before := e.fingerprint()
	e.RecentEvents = slices.Clone(e.RecentEvents)
	if from.LastOptOutAt.After(e.LastOptOutAt) {
		e.LastOptOutAt = from.LastOptOutAt
	}
	if from.ClearedAt.After(e.ClearedAt) {
		e.ClearedAt = from.ClearedAt
	}
	if !from.DecidedAt.IsZero() || from.OptedOut {
		e.foldWish(from.wish(), from.DecidedBy, from.Source, !e.DecidedAt.IsZero() || e.OptedOut)
	}
	if e.SalesforceID == "" || e.SalesforceID == from.SalesforceID {
		if e.SalesforceID == "" {
			e.SalesforceID, e.ObjectType = from.SalesforceID, from.ObjectType
		}
		if e.Confirmed == nil && from.Confirmed != nil {
			e.Field, e.Confirmed, e.ConfirmedAt = from.Field, from.Confirmed, from.ConfirmedAt
		}
		if from.SetByUs && (e.Field == "" || e.Field == from.Field) {
			// Our push may have set from's field (a write confirmed or only
			// attempted): the person's resubscribe must still clear it.
			e.Field, e.SetByUs = from.Field, true
		}
	}
	for _, id := range from.RecentEvents {
		e.Remember(id)
	}
	for _, id := range from.ConvertedFrom {
		if !slices.Contains(e.ConvertedFrom, id) {
			e.ConvertedFrom = append(slices.Clone(e.ConvertedFrom), id)
		}
	}
	if e.fingerprint() == before {
		return e, false
	}
	e.settle(field, "merged the Salesforce-only entry of this person")
	return e, true
}

// Retire marks an entry merged into key.
func Retire(e Entry, into string) (Entry, bool) {
	if e.MergedInto == into {
		return e, false
	}
	e.MergedInto = into
	e.State, e.Reason = StateRetired, "merged into "+into
	return e, true
}

// fingerprint is the part of an entry Merge can change.
func (e *Entry) fingerprint() string {
	c := "nil"
	if e.Confirmed != nil {
		c = fmt.Sprint(*e.Confirmed)
	}
	return fmt.Sprint(e.OptedOut, e.DecidedAt.UnixNano(), e.LastOptOutAt.UnixNano(), e.ClearedAt.UnixNano(),
		e.SalesforceID, e.Field, c, e.SetByUs, e.RecentEvents, e.ConvertedFrom)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
