package sfwrite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Ledger is what the protocol needs of the store's writer (*ledger.Writer):
// updates through the state machine, and Check before each Salesforce call
// (a no-op unless the writer is fenced), so a writer whose fence is lost
// writes nothing to Salesforce.
type Ledger interface {
	Update(ctx context.Context, key string, step optout.Step, opts ...ledger.UpdateOption) (ledger.Result, error)
	Check(ctx context.Context) error
}

// Salesforce is what the protocol needs of a tenant's client.
type Salesforce interface {
	UpdateOptOut(ctx context.Context, updates []salesforce.Update) ([]salesforce.Result, error)
	ReadAndUpdate(ctx context.Context, updates []salesforce.ReadUpdate) ([]salesforce.ReadResult, error)
	Retrieve(ctx context.Context, sobjectType string, ids, fields []string) ([]*salesforce.Record, error)
}

// DeadLetterer copies the event that decided a given-up person to the DLQ.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, e optout.Entry, cause error, code, class string)
}

// DeadLetterFunc is a function as a DeadLetterer.
type DeadLetterFunc func(ctx context.Context, e optout.Entry, cause error, code, class string)

// DeadLetter calls f.
func (f DeadLetterFunc) DeadLetter(ctx context.Context, e optout.Entry, cause error, code, class string) {
	f(ctx, e, cause, code, class)
}

// Config is how a writer runs the one protocol.
type Config struct {
	Field    string
	ClaimTTL time.Duration
	Now      func() time.Time
	Workers  int // concurrent ledger round trips

	// ReadFirst makes each sales-field write read the field first, in the
	// same /composite call (salesforce.ReadAndUpdate), and records a record
	// found already true as someone else's mark (the push, which knows
	// nothing of Salesforce's value; the reconcile read it and writes with
	// one Collections call). Email Opt Out is never read: it is only set.
	ReadFirst bool

	// Attempts is how many calls a retryable failure gets within the batch,
	// AttemptBackoff apart (doubling), while the claim holds; 0 or 1: one.
	Attempts       int
	AttemptBackoff time.Duration
	// Final, if set, tells failures no further call can help (the
	// reconcile's spent API budget).
	Final func(error) bool

	// Backoff gives the wait before a failed person's next attempt (its
	// attempt count so far + 1): the failure is recorded (optout.Failed),
	// permanent ones and those past RetryHorizon dead-lettered. Nil: a
	// failure is recorded as a write Salesforce did not confirm and the
	// person stays dirty for the push (the reconcile).
	Backoff      func(attempt uint64) time.Duration
	BackoffMax   time.Duration
	RetryHorizon time.Duration
	DeadLetter   DeadLetterer

	// Timed, if set, is told how long each stage took: StageWrite (the
	// call, the sales field's read included), StageRecord (a confirmation).
	Timed func(stage string, d time.Duration)
}

// The stages Config.Timed is told of.
const (
	StageWrite  = "salesforce_write"
	StageRecord = "confirm"
)

func (c Config) timed(stage string, began time.Time) {
	if c.Timed != nil {
		c.Timed(stage, time.Since(began))
	}
}

// Kind is what became of one person of a batch.
type Kind int

const (
	// NotWritten: the batch stopped before the person's write (Batch's error).
	NotWritten Kind = iota
	// Confirmed: Salesforce confirmed the write and it is recorded (At).
	Confirmed
	// Unconfirmed: the write failed and is recorded as not confirmed.
	Unconfirmed
	// Moved: the entry changed since it was read; read it again.
	Moved
	// HeldElsewhere: another writer's claim holds the person until Until.
	HeldElsewhere
	// FoundSet: Salesforce already held the mark before our write of the
	// same value; recorded (At) as confirmed and someone else's; read it
	// again.
	FoundSet
	// Converted: the Lead was converted; the person now points at its
	// Contact; read it again.
	Converted
	// Failed: the failure is recorded; the next attempt is due after Wait.
	Failed
	// DeadLettered: the person is given up and copied to the DLQ.
	DeadLettered
	// TenantHeld: the failure is the tenant's (Class.HoldsTenant); nothing
	// is recorded and the person waits for the tenant.
	TenantHeld
	// LedgerFailed: recording failed (Err); retry after Wait.
	LedgerFailed
)

// Outcome is what became of one person.
type Outcome struct {
	Kind  Kind
	At    ledger.Snapshot // as recorded (Confirmed, Unconfirmed)
	Until time.Time       // HeldElsewhere
	Wait  time.Duration   // Failed, LedgerFailed
	Cause error           // Salesforce's failure, or the store's
	Class salesforce.Class
	// HorizonExceeded: dead-lettered because retries ran past the horizon.
	HorizonExceeded bool
	// Changed: recording the outcome changed the entry.
	Changed bool
}

// Report is what a batch came to: one outcome per person (in order), the
// Salesforce calls made, and the whole call's failure if it failed as one.
type Report struct {
	Outcomes []Outcome
	Calls    int // Salesforce calls made (reads too)
	Writes   int // of which writes
	CallErr  error
}

// Batch runs the write protocol over people, all read by w's writer: the
// batch's claim (sales field), each write recorded before it is made,
// w.Check right before the call, the write in one call (one update per
// record: a Collections call, or with ReadFirst on the sales field one
// /composite that reads the field just before writing it), and each outcome
// recorded through the state machine: a converted Lead followed, failures
// classified by salesforce.ClassOf. Persons holding a Claim were attempted
// already. An error (the fence lost, ctx ended) stops the batch before its
// call; what was not written is NotWritten.
func Batch(ctx context.Context, cfg Config, w Ledger, client Salesforce, people []*Person) (Report, error) {
	b := &batchRun{cfg: cfg, w: w, client: client, out: make([]Outcome, len(people)), index: make(map[*Person]int, len(people))}
	for i, p := range people {
		b.index[p] = i
	}
	claim, deadline := Claim(cfg.Field, cfg.Now(), cfg.ClaimTTL)
	live := people
	if claim != nil {
		if cfg.ReadFirst {
			// Decided on the entries as read, before Attempt raises SetByUs.
			b.reads = b.toRead(live)
		}
		live = b.attemptAll(ctx, live, claim, people)
	}
	err := b.write(ctx, live, deadline)
	return Report{Outcomes: b.out, Calls: b.calls, Writes: b.writes, CallErr: b.callErr}, err
}

type batchRun struct {
	cfg    Config
	w      Ledger
	client Salesforce
	out    []Outcome
	index  map[*Person]int
	// reads: the persons whose sales field is read in the write's own
	// call (nil: the write is a plain Collections call).
	reads   map[*Person]bool
	mu      sync.Mutex
	calls   int
	writes  int
	callErr error
}

func (b *batchRun) set(p *Person, o Outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.out[b.index[p]] = o
}

func (b *batchRun) call() {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
}

func (b *batchRun) each(ctx context.Context, people []*Person, fn func(context.Context, *Person)) {
	_ = Parallel(context.WithoutCancel(ctx), b.cfg.Workers, people, func(ctx context.Context, _ int, p *Person) error {
		fn(ctx, p)
		return nil
	})
}

// toRead picks the persons whose sales field the write's call reads just
// before writing it, so that a mark already set stays someone else's: a
// later resubscribe must not clear a mark we did not make. Where the
// ledger's own knowledge already answers, nothing is read:
//   - a clear (false): only what may be ours is ever cleared, so whose the
//     mark was does not matter;
//   - an entry that says our push may have set the mark (SetByUs: an
//     earlier write of ours may have landed, its answer lost): a true found
//     now may be ours and proves nothing, so it stays possibly ours.
//
// No write is skipped on the read: the read and the write travel in one
// request and Salesforce has no "update only if the field is false"
// (spec §11), so a record found true is rewritten as true (its
// LastModifiedDate and SystemModstamp move, a change event is published and
// the org's automation on the record may fire). The ledger keeps that rare:
// a person whose entry already holds Salesforce's true (Confirmed, from our
// write or the reconcile's read) is not dirty and never written, so only
// marks set in Salesforce since the ledger last learnt the value are
// rewritten, each once.
func (b *batchRun) toRead(people []*Person) map[*Person]bool {
	field := b.cfg.Field
	out := make(map[*Person]bool, len(people))
	for _, p := range people {
		if p.Value && !(p.At.Entry.Field == field && p.At.Entry.SetByUs) {
			out[p] = true
		}
	}
	return out
}

// attemptAll records every write before it is made and takes the claim on
// its person; it keeps, in the batch's order, those still to write.
func (b *batchRun) attemptAll(ctx context.Context, people []*Person, claim *optout.Claim, order []*Person) []*Person {
	keep := map[*Person]bool{}
	var mu sync.Mutex
	b.each(ctx, people, func(ctx context.Context, p *Person) {
		ok := p.Claim != nil
		if !ok {
			now := b.cfg.Now()
			a, err := Attempt(ctx, b.w, b.cfg.Field, p, claim, now)
			switch {
			case err != nil:
				b.set(p, Outcome{Kind: LedgerFailed, Cause: err, Wait: b.wait(1, nil)})
			case a.Moved:
				b.set(p, Outcome{Kind: Moved})
			case a.Held != nil:
				b.set(p, Outcome{Kind: HeldElsewhere, Until: a.Held.Until})
			default:
				ok = true
			}
		}
		if ok {
			mu.Lock()
			keep[p] = true
			mu.Unlock()
		}
	})
	var out []*Person
	for _, p := range order {
		if keep[p] {
			out = append(out, p)
		}
	}
	return out
}

// write makes the call (one update per Salesforce record; persons sharing
// one share its result) and records each outcome.
func (b *batchRun) write(ctx context.Context, people []*Person, deadline time.Time) error {
	if len(people) == 0 {
		return nil
	}
	byID := map[string][]*Person{}
	var ids []string
	for _, p := range people {
		id := p.At.Entry.SalesforceID
		if _, ok := byID[id]; !ok {
			ids = append(ids, id)
		}
		byID[id] = append(byID[id], p)
	}
	// The call must end by deadline, while the claim holds: after it ends
	// another writer may write the person, and this write must not land then.
	callCtx := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	attempts := max(b.cfg.Attempts, 1)
	pending := ids
	done := map[string]error{} // nil: confirmed
	read := map[string]bool{}  // records whose field the call reads first
	for _, p := range people {
		if b.reads[p] {
			read[p.At.Entry.SalesforceID] = true
		}
	}
	before := map[string]bool{} // the value read just before the write that answered
	for attempt := 1; len(pending) > 0; attempt++ {
		if callCtx.Err() != nil && ctx.Err() == nil {
			// The claim's time is up: what is left is not written without it.
			for _, id := range pending {
				done[id] = &salesforce.Error{Op: "update opt-out", Code: "CLAIM_ENDED", Message: "the batch's claim ended before the write", Class: salesforce.Retryable}
			}
			break
		}
		// Salesforce cannot check the fence: the writer checks it right
		// before each call, so a run that lost its lease writes nothing.
		if err := b.w.Check(ctx); err != nil {
			return fmt.Errorf("before writing %d records: %w", len(pending), err)
		}
		updates := make([]salesforce.Update, len(pending))
		for i, id := range pending {
			e := byID[id][0].At.Entry
			updates[i] = salesforce.Update{ID: id, Type: e.ObjectType, Field: b.cfg.Field, Value: byID[id][0].Value}
		}
		b.call()
		b.writes++
		began := time.Now()
		results, err := b.send(callCtx, pending, updates, read, before)
		b.cfg.timed(StageWrite, began)
		if err != nil && callCtx.Err() != nil && ctx.Err() == nil {
			continue // the claim ended mid-call: settled at the top
		}
		if err != nil {
			if b.retry(err) && attempt < attempts {
				if err := Sleep(ctx, b.cfg.AttemptBackoff<<(attempt-1)); err != nil {
					return err
				}
				continue
			}
			b.callErr = err
			if b.cfg.Backoff == nil {
				// No answer for the batch: the caller decides (the reconcile
				// stops and is resumed); the persons keep their attempts.
				return fmt.Errorf("write %d records: %w", len(pending), err)
			}
			if len(results) != len(pending) {
				for _, id := range pending {
					done[id] = err
				}
				break
			}
		}
		var retry []string
		for i, res := range results {
			id := pending[i]
			switch {
			case res.Success:
				done[id] = nil
			case res.Err != nil && res.Err.Code != codeConvertedLead && b.retry(res.Err) && attempt < attempts:
				retry = append(retry, id)
			case res.Err == nil:
				done[id] = errors.New("salesforce reported failure without an error")
			default:
				done[id] = res.Err
			}
		}
		pending = retry
		if len(pending) > 0 {
			if err := Sleep(ctx, b.cfg.AttemptBackoff<<(attempt-1)); err != nil {
				return err
			}
		}
	}
	b.each(ctx, people, func(ctx context.Context, p *Person) {
		cause := done[p.At.Entry.SalesforceID]
		var sfErr *salesforce.Error
		switch {
		case cause == nil:
			v, known := before[p.At.Entry.SalesforceID]
			b.record(ctx, p, true, nil, b.reads[p] && known && v)
		case errors.As(cause, &sfErr) && sfErr.Code == codeConvertedLead:
			b.followConversion(ctx, p)
		default:
			b.failed(ctx, p, cause)
		}
	})
	return nil
}

// send makes one call: a Collections call, or, when the batch reads, the
// read and the write in one /composite (salesforce.ReadAndUpdate), whose
// pre-write values it keeps in before. A call whose answer never came may
// have written: its records are not read again (a read would see our own
// mark and take it for someone else's), and their values stay unknown.
func (b *batchRun) send(ctx context.Context, ids []string, updates []salesforce.Update, read, before map[string]bool) ([]salesforce.Result, error) {
	if b.reads == nil {
		return b.client.UpdateOptOut(ctx, updates)
	}
	rus := make([]salesforce.ReadUpdate, len(updates))
	for i, u := range updates {
		rus[i] = salesforce.ReadUpdate{Update: u, Read: read[ids[i]]}
	}
	rr, err := b.client.ReadAndUpdate(ctx, rus)
	results := make([]salesforce.Result, len(rr))
	for i, r := range rr {
		results[i] = r.Result
		delete(before, ids[i])
		if r.Before != nil && r.Success {
			before[ids[i]] = *r.Before
		}
	}
	if err != nil {
		for _, id := range ids {
			read[id] = false
			delete(before, id)
		}
	}
	return results, err
}

// retry reports whether a failure is worth another call within the batch.
func (b *batchRun) retry(err error) bool {
	return salesforce.ClassOf(err) == salesforce.Retryable && (b.cfg.Final == nil || !b.cfg.Final(err))
}

const codeConvertedLead = "CANNOT_UPDATE_CONVERTED_LEAD"

// record records the write's outcome (Record) as Confirmed or Unconfirmed,
// or, when its call read the mark already set (found), as FoundSet.
func (b *batchRun) record(ctx context.Context, p *Person, ok bool, cause error, found bool) {
	began := time.Now()
	res, err := Record(ctx, b.w, b.cfg.Field, p, ok, found, b.cfg.Now().UTC())
	if ok {
		b.cfg.timed(StageRecord, began)
	}
	if err != nil {
		b.set(p, Outcome{Kind: LedgerFailed, Cause: fmt.Errorf("record the outcome of the write of %s: %w", p.Key, err), Wait: b.wait(1, nil)})
		return
	}
	kind := Confirmed
	switch {
	case !ok:
		kind = Unconfirmed
	case found:
		kind = FoundSet
	}
	b.set(p, Outcome{Kind: kind, At: res.Snapshot(), Cause: cause, Class: salesforce.ClassOf(cause), Changed: res.Changed})
}

// wait is the backoff before attempt n, at least Salesforce's Retry-After.
func (b *batchRun) wait(n uint64, cause error) time.Duration {
	if b.cfg.Backoff == nil {
		return 0
	}
	wait := b.cfg.Backoff(n)
	var sfErr *salesforce.Error
	if errors.As(cause, &sfErr) && sfErr.RetryAfter > wait {
		wait = min(sfErr.RetryAfter, b.cfg.BackoffMax)
	}
	return wait
}

// failed records one person's failure by its class.
func (b *batchRun) failed(ctx context.Context, p *Person, cause error) {
	class := salesforce.ClassOf(cause)
	if b.cfg.Backoff == nil {
		b.record(ctx, p, false, cause, false)
		return
	}
	if class.HoldsTenant() {
		b.set(p, Outcome{Kind: TenantHeld, Cause: cause, Class: class})
		return
	}
	wait := b.wait(uint64(p.At.Entry.Retry.Attempts+1), cause)
	var out optout.FailOutcome
	res, err := b.w.Update(ctx, p.Key, optout.FailedStep(optout.Failure{
		Write:     optout.Write{SalesforceID: p.At.Entry.SalesforceID, Field: b.cfg.Field, Value: p.Value, Claim: p.Claim},
		Permanent: class == salesforce.PermanentRecord, Err: OneLine(cause.Error()),
		Wait: wait, Now: b.cfg.Now(), Horizon: b.cfg.RetryHorizon,
	}, &out))
	if err != nil {
		b.set(p, Outcome{Kind: LedgerFailed, Cause: cause, Class: class, Wait: wait})
		return
	}
	if !out.DeadLetter {
		b.set(p, Outcome{Kind: Failed, Cause: cause, Class: class, Wait: wait})
		return
	}
	code := CodeOf(cause)
	if out.HorizonExceeded {
		code = "retry_horizon_exceeded"
	}
	if b.cfg.DeadLetter != nil {
		b.cfg.DeadLetter.DeadLetter(ctx, res.Entry, cause, code, class.String())
	}
	b.set(p, Outcome{Kind: DeadLettered, Cause: cause, Class: class, HorizonExceeded: out.HorizonExceeded})
}

// followConversion points the person at the Contact its converted Lead
// became; the next round writes the Contact.
func (b *batchRun) followConversion(ctx context.Context, p *Person) {
	leadID := p.At.Entry.SalesforceID
	b.call()
	recs, err := b.client.Retrieve(ctx, "Lead", []string{leadID}, []string{"Id", "ConvertedContactId"})
	if err != nil {
		b.failed(ctx, p, err)
		return
	}
	var contactID string
	if len(recs) == 1 && recs[0] != nil {
		if v, ok := recs[0].Get("ConvertedContactId"); ok {
			contactID, _ = v.(string)
		}
	}
	if contactID == "" {
		b.failed(ctx, p, &salesforce.Error{Op: "follow converted lead", Code: codeConvertedLead,
			Message: "converted lead has no ConvertedContactId", Class: salesforce.PermanentRecord})
		return
	}
	if _, err := FollowConversion(ctx, b.w, p.Key, leadID, contactID); err != nil {
		b.set(p, Outcome{Kind: LedgerFailed, Cause: fmt.Errorf("record a Lead conversion: %w", err), Wait: b.wait(1, nil)})
		return
	}
	b.set(p, Outcome{Kind: Converted})
}

// FollowConversion records that the person under key, whose Lead leadID
// was converted into the Contact contactID, now points at the Contact (the
// state machine's ConversionStep; both ids stay aliases of the person, so
// the Lead's later events reach it). It is the one way every writer follows
// a conversion: the push and the reconcile's writes when Salesforce refuses
// a converted Lead, the nightly run when it finds the Contact opted out.
func FollowConversion(ctx context.Context, w Ledger, key, leadID, contactID string) (ledger.Result, error) {
	return w.Update(ctx, key, optout.ConversionStep(leadID, contactID), ledger.Alias(contactID, leadID))
}

// CodeOf is a failure's Salesforce code, "error" when it has none.
func CodeOf(err error) string {
	var e *salesforce.Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	return "error"
}

// OneLine makes s one line of at most 1 KiB, for the ledger and logs.
func OneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	if len(b) > 1024 {
		b = b[:1024]
	}
	return string(b)
}
