package sfwrite_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// The protocol's unit tests run on fakes of our interfaces: the store's
// writer (entries in memory, steps applied as the store applies them), a
// tenant's Salesforce client and a dead-letterer. The store's own behaviour
// (compare-and-set, fences, dirty set) is tested in shared/store/ledger.

const salesField = "Sales_Opt_Out__c"

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeLedger applies each step to its in-memory entry, logging what it did.
type fakeLedger struct {
	mu      sync.Mutex
	field   string
	entries map[string]optout.Entry
	rev     map[string]uint64
	log     *[]string
	fence   error // Check's answer: a lost fence
}

func newLedger(field string, log *[]string, es map[string]optout.Entry) *fakeLedger {
	l := &fakeLedger{field: field, entries: es, rev: map[string]uint64{}, log: log}
	for k := range es {
		l.rev[k] = 1
	}
	return l
}

func (l *fakeLedger) Update(_ context.Context, key string, step optout.Step, _ ...ledger.UpdateOption) (ledger.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.entries[key]
	next, changed := step(cur, optout.At{Tenant: "acme", Field: l.field, Exists: ok, Current: true, Now: now})
	*l.log = append(*l.log, "ledger "+key)
	if changed {
		l.entries[key] = next
		l.rev[key]++
	} else {
		next = cur
	}
	return ledger.Result{Key: key, Entry: next, Rev: l.rev[key], Changed: changed}, nil
}

func (l *fakeLedger) Check(context.Context) error {
	*l.log = append(*l.log, "check")
	return l.fence
}

// fakeSF answers each UpdateOptOut or ReadAndUpdate call with the next of
// answers (per id), and a Lead's ConvertedContactId from converted. Like
// Salesforce, ReadAndUpdate reads set before applying the call's
// successful writes to it.
type fakeSF struct {
	log       *[]string
	answers   []func(salesforce.Update) (salesforce.Result, error)
	wrote     [][]salesforce.Update
	read      [][]bool // per ReadAndUpdate call, which updates asked for a read
	converted map[string]string
	set       map[string]bool // records whose sales field is true
}

func (f *fakeSF) ReadAndUpdate(ctx context.Context, rus []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	us := make([]salesforce.Update, len(rus))
	asked := make([]bool, len(rus))
	before := make([]*bool, len(rus))
	for i, ru := range rus {
		us[i], asked[i] = ru.Update, ru.Read
		if ru.Read {
			v := f.set[ru.ID]
			before[i] = &v
		}
	}
	f.read = append(f.read, asked)
	log := *f.log
	res, err := f.UpdateOptOut(ctx, us)
	*f.log = append(log, "salesforce read+update")
	out := make([]salesforce.ReadResult, len(res))
	for i, r := range res {
		if r.Success || err != nil {
			if f.set == nil {
				f.set = map[string]bool{}
			}
			f.set[us[i].ID] = us[i].Value // an unanswered call may have written
		}
		out[i] = salesforce.ReadResult{Result: r}
		if err == nil {
			out[i].Before = before[i]
		}
	}
	return out, err
}

func (f *fakeSF) UpdateOptOut(_ context.Context, us []salesforce.Update) ([]salesforce.Result, error) {
	*f.log = append(*f.log, "salesforce update")
	f.wrote = append(f.wrote, us)
	answer := f.answers[min(len(f.wrote), len(f.answers))-1]
	out := make([]salesforce.Result, len(us))
	var callErr error
	for i, u := range us {
		r, err := answer(u)
		r.ID = u.ID
		out[i] = r
		if err != nil {
			callErr = err
		}
	}
	return out, callErr
}

func (f *fakeSF) Retrieve(_ context.Context, typ string, ids, _ []string) ([]*salesforce.Record, error) {
	*f.log = append(*f.log, "salesforce read "+typ)
	out := make([]*salesforce.Record, len(ids))
	for i, id := range ids {
		out[i] = &salesforce.Record{Type: typ, ID: id, Fields: map[string]any{"Id": id, "ConvertedContactId": f.converted[id], salesField: f.set[id]}}
	}
	return out, nil
}

func ok(salesforce.Update) (salesforce.Result, error) { return salesforce.Result{Success: true}, nil }

func failWith(code string) func(salesforce.Update) (salesforce.Result, error) {
	return func(salesforce.Update) (salesforce.Result, error) {
		return salesforce.Result{Err: &salesforce.Error{Op: "update opt-out", Code: code, Class: salesforce.Classify(400, code, "")}}, nil
	}
}

type fakeDLQ struct{ letters []string }

func (d *fakeDLQ) DeadLetter(_ context.Context, e optout.Entry, _ error, code, class string) {
	d.letters = append(d.letters, fmt.Sprintf("%s %s %s", e.SalesConnectID, code, class))
}

// optedOut is a person whose opt-out is still to be written.
func optedOut(t *testing.T, sc, sfID, typ string) optout.Entry {
	t.Helper()
	t0 := now.Add(-time.Hour)
	e := optout.Entry{Tenant: "acme", SalesConnectID: sc, SalesforceID: sfID, ObjectType: typ, OptedOut: true,
		DecidedAt: t0, LastOptOutAt: t0, DecidedBy: "evt-" + sc, Source: "EMAIL_LINK", State: optout.StatePending}
	if v, w := e.Target(salesField); !v || !w {
		t.Fatalf("test setup: Target = (%t, %t); want a write of true due", v, w)
	}
	return e
}

func people(l *fakeLedger, keys ...string) []*sfwrite.Person {
	out := make([]*sfwrite.Person, len(keys))
	for i, k := range keys {
		out[i] = &sfwrite.Person{Key: k, At: ledger.Snapshot{Entry: l.entries[k], Rev: l.rev[k]}, Value: true}
	}
	return out
}

// pusherConfig records failures with backoff and dead-letters (the push).
func pusherConfig(dlq sfwrite.DeadLetterer) sfwrite.Config {
	return sfwrite.Config{Field: salesField, ClaimTTL: 80 * time.Second, Now: func() time.Time { return now }, Workers: 4,
		Backoff: func(n uint64) time.Duration { return time.Duration(n) * 7 * time.Second }, BackoffMax: time.Hour,
		RetryHorizon: 24 * time.Hour, DeadLetter: dlq}
}

func TestBatchClaimsRecordsTheAttemptWritesThenRecordsTheConfirmation(t *testing.T) {
	var log []string
	l := newLedger(salesField, &log, map[string]optout.Entry{"p": optedOut(t, "sc-p", "003000000000001AAA", "Contact")})
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){ok}}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(&fakeDLQ{}), l, sf, people(l, "p"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ledger p", "check", "salesforce update", "ledger p"}
	if fmt.Sprint(log) != fmt.Sprint(want) {
		t.Fatalf("steps %q; want %q (the attempt recorded and the fence checked before the write, its outcome after)", log, want)
	}
	if o := rep.Outcomes[0]; o.Kind != sfwrite.Confirmed || !o.Changed {
		t.Fatalf("outcome %+v; want Confirmed and recorded", o)
	}
	e := l.entries["p"]
	if _, due := e.Target(salesField); due || e.Writing != nil || !e.SetByUs {
		t.Fatalf("entry after the write: due %t claim %+v setByUs %t; want settled, the claim released, the mark ours", due, e.Writing, e.SetByUs)
	}
	if u := sf.wrote[0][0]; u.ID != "003000000000001AAA" || u.Field != salesField || !u.Value || u.Type != "Contact" {
		t.Fatalf("wrote %+v; want the person's record set true", u)
	}
}

func TestBatchFollowsAConvertedLeadToItsContact(t *testing.T) {
	var log []string
	lead, contact := "00Q000000000001AAA", "003000000000009AAA"
	l := newLedger(salesField, &log, map[string]optout.Entry{"p": optedOut(t, "sc-p", lead, "Lead")})
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){failWith("CANNOT_UPDATE_CONVERTED_LEAD")},
		converted: map[string]string{lead: contact}}
	dlq := &fakeDLQ{}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(dlq), l, sf, people(l, "p"))
	if err != nil {
		t.Fatal(err)
	}
	if o := rep.Outcomes[0]; o.Kind != sfwrite.Converted {
		t.Fatalf("outcome %+v; want Converted", o)
	}
	e := l.entries["p"]
	if e.SalesforceID != contact || len(dlq.letters) != 0 {
		t.Fatalf("entry points at %s, %d dead letters; want the Contact %s and none", e.SalesforceID, len(dlq.letters), contact)
	}
	if v, due := e.Target(salesField); !v || !due {
		t.Fatalf("after the conversion Target = (%t, %t); want the Contact's write due", v, due)
	}
}

func TestBatchDeadLettersAPermanentRecordFailureAndWritesTheOthers(t *testing.T) {
	var log []string
	gone, fine := "003000000000001AAA", "003000000000002AAA"
	l := newLedger(salesField, &log, map[string]optout.Entry{
		"gone": optedOut(t, "sc-gone", gone, "Contact"), "fine": optedOut(t, "sc-fine", fine, "Contact")})
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){func(u salesforce.Update) (salesforce.Result, error) {
		if u.ID == gone {
			return failWith("ENTITY_IS_DELETED")(u)
		}
		return ok(u)
	}}}
	dlq := &fakeDLQ{}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(dlq), l, sf, people(l, "gone", "fine"))
	if err != nil {
		t.Fatal(err)
	}
	if k0, k1 := rep.Outcomes[0].Kind, rep.Outcomes[1].Kind; k0 != sfwrite.DeadLettered || k1 != sfwrite.Confirmed {
		t.Fatalf("outcomes %d, %d; want DeadLettered, Confirmed", k0, k1)
	}
	if fmt.Sprint(dlq.letters) != "[sc-gone ENTITY_IS_DELETED permanent-record]" {
		t.Fatalf("dead letters %q; want the deleted record's, with its code and class", dlq.letters)
	}
	if e := l.entries["gone"]; e.State != optout.StateFailed {
		t.Fatalf("given-up person in state %s; want %s", e.State, optout.StateFailed)
	}
}

func TestBatchRecordsARetryableFailureWithItsBackoff(t *testing.T) {
	var log []string
	l := newLedger(salesField, &log, map[string]optout.Entry{"p": optedOut(t, "sc-p", "003000000000001AAA", "Contact")})
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){failWith("UNABLE_TO_LOCK_ROW")}}
	dlq := &fakeDLQ{}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(dlq), l, sf, people(l, "p"))
	if err != nil {
		t.Fatal(err)
	}
	if o := rep.Outcomes[0]; o.Kind != sfwrite.Failed || o.Wait != 7*time.Second || o.Class != salesforce.Retryable {
		t.Fatalf("outcome %+v; want Failed, retryable, next attempt in 7s (the first backoff)", o)
	}
	e := l.entries["p"]
	if e.Retry.Attempts != 1 || !e.Retry.NextAttempt.Equal(now.Add(7*time.Second)) || e.Writing != nil || len(dlq.letters) != 0 {
		t.Fatalf("entry retry %+v claim %+v, %d dead letters; want 1 attempt, the next at now+7s, the claim released, none", e.Retry, e.Writing, len(dlq.letters))
	}
	if len(sf.wrote) != 1 {
		t.Fatalf("%d calls; want 1 (the push retries later, not in the call loop)", len(sf.wrote))
	}
}

func TestBatchHoldsEveryPersonOnATenantLevelFailure(t *testing.T) {
	var log []string
	l := newLedger(salesField, &log, map[string]optout.Entry{
		"a": optedOut(t, "sc-a", "003000000000001AAA", "Contact"), "b": optedOut(t, "sc-b", "003000000000002AAA", "Contact")})
	quota := &salesforce.Error{Op: "update opt-out", Status: 403, Code: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded.", Class: salesforce.Quota}
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){func(salesforce.Update) (salesforce.Result, error) {
		return salesforce.Result{Err: quota}, quota
	}}}
	dlq := &fakeDLQ{}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(dlq), l, sf, people(l, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rep.CallErr, quota) {
		t.Fatalf("call error %v; want the quota failure", rep.CallErr)
	}
	for i, o := range rep.Outcomes {
		if o.Kind != sfwrite.TenantHeld || o.Class != salesforce.Quota {
			t.Fatalf("outcome %d %+v; want TenantHeld by the quota", i, o)
		}
	}
	for k, e := range l.entries {
		if e.Retry.Attempts != 0 || e.State == optout.StateFailed {
			t.Fatalf("%s: retry %+v state %s; want no failure counted against the person", k, e.Retry, e.State)
		}
	}
	if len(dlq.letters) != 0 {
		t.Fatalf("dead letters %q; want none", dlq.letters)
	}
}

func TestBatchOfAWriterWhoseFenceIsLostWritesNothingToSalesforce(t *testing.T) {
	var log []string
	l := newLedger(salesField, &log, map[string]optout.Entry{"p": optedOut(t, "sc-p", "003000000000001AAA", "Contact")})
	lost := errors.New("fenced: a newer holder took over")
	l.fence = lost
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){ok}}
	rep, err := sfwrite.Batch(context.Background(), pusherConfig(&fakeDLQ{}), l, sf, people(l, "p"))
	if !errors.Is(err, lost) {
		t.Fatalf("Batch: %v; want the fence's error", err)
	}
	if len(sf.wrote) != 0 || rep.Outcomes[0].Kind != sfwrite.NotWritten {
		t.Fatalf("%d writes, outcome %+v; want none and NotWritten", len(sf.wrote), rep.Outcomes[0])
	}
}

// The reconcile's configuration: retryable failures are retried within the
// call loop, and one that still fails is recorded as a write Salesforce did
// not confirm, the person left for the push.
func TestBatchRetriesWithinTheCallLoopAndRecordsAFinalFailureAsUnconfirmed(t *testing.T) {
	var log []string
	l := newLedger(salesField, &log, map[string]optout.Entry{
		"a": optedOut(t, "sc-a", "003000000000001AAA", "Contact"), "b": optedOut(t, "sc-b", "003000000000002AAA", "Contact")})
	calls := 0
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){
		failWith("UNABLE_TO_LOCK_ROW"),
		func(u salesforce.Update) (salesforce.Result, error) {
			calls++
			if u.ID == "003000000000001AAA" {
				return ok(u)
			}
			return failWith("UNABLE_TO_LOCK_ROW")(u)
		},
	}}
	cfg := sfwrite.Config{Field: salesField, ClaimTTL: 80 * time.Second, Now: func() time.Time { return now }, Workers: 2,
		Attempts: 3, AttemptBackoff: time.Millisecond}
	rep, err := sfwrite.Batch(context.Background(), cfg, l, sf, people(l, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sf.wrote) != 3 || len(sf.wrote[2]) != 1 {
		t.Fatalf("%d calls (last of %d records); want 3, the last with only the record still failing", len(sf.wrote), len(sf.wrote[len(sf.wrote)-1]))
	}
	if k0, k1 := rep.Outcomes[0].Kind, rep.Outcomes[1].Kind; k0 != sfwrite.Confirmed || k1 != sfwrite.Unconfirmed {
		t.Fatalf("outcomes %d, %d; want Confirmed, Unconfirmed", k0, k1)
	}
	b := l.entries["b"]
	if _, due := b.Target(salesField); !due || b.Writing != nil || b.Retry.Attempts != 0 {
		t.Fatalf("unconfirmed person: due %t claim %+v retry %+v; want still due for the push, the claim released, no failure counted", due, b.Writing, b.Retry)
	}
}

// The push reads the sales field in the call that sets it: a true already
// there is written again but recorded as someone else's (a later
// resubscribe must not clear it); the others are recorded as ours. One
// call for both.
func TestBatchReadingFirstLeavesAMarkFoundInSalesforceToItsOwner(t *testing.T) {
	var log []string
	theirs, ours := "003000000000001AAA", "003000000000002AAA"
	l := newLedger(salesField, &log, map[string]optout.Entry{
		"theirs": optedOut(t, "sc-theirs", theirs, "Contact"), "ours": optedOut(t, "sc-ours", ours, "Contact")})
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){ok}, set: map[string]bool{theirs: true}}
	cfg := pusherConfig(&fakeDLQ{})
	cfg.ReadFirst = true
	rep, err := sfwrite.Batch(context.Background(), cfg, l, sf, people(l, "theirs", "ours"))
	if err != nil {
		t.Fatal(err)
	}
	if k0, k1 := rep.Outcomes[0].Kind, rep.Outcomes[1].Kind; k0 != sfwrite.FoundSet || k1 != sfwrite.Confirmed {
		t.Fatalf("outcomes %d, %d; want FoundSet, Confirmed", k0, k1)
	}
	if len(sf.wrote) != 1 || len(sf.wrote[0]) != 2 || fmt.Sprint(sf.read) != "[[true true]]" {
		t.Fatalf("wrote %+v reading %v; want both records read and written in one call", sf.wrote, sf.read)
	}
	if e := l.entries["theirs"]; e.SetByUs || e.Confirmed == nil || !*e.Confirmed || e.Writing != nil || e.Dirty(salesField) {
		t.Fatalf("found mark: %+v; want Salesforce's true confirmed, not ours, the claim released, nothing due", e)
	}
	if e := l.entries["ours"]; !e.SetByUs {
		t.Fatal("written mark not recorded as ours")
	}
	if rep.Calls != 1 || rep.Writes != 1 {
		t.Fatalf("%d calls, %d writes; want one call that reads and writes", rep.Calls, rep.Writes)
	}
	// The mark found stays its owner's: a resubscribe has nothing to clear.
	var fr optout.FoldResult
	if _, err := l.Update(context.Background(), "theirs", optout.FoldStep(optout.EventInput{ID: "r1", Action: optout.Resubscribe,
		OccurredAt: now, SalesforceID: theirs, ObjectType: "Contact", SalesConnectID: "sc-theirs"}, &fr)); err != nil {
		t.Fatal(err)
	}
	if e := l.entries["theirs"]; e.Dirty(salesField) {
		t.Fatalf("after a resubscribe: %+v; want someone else's mark left alone", e)
	}
}

// A call whose answer never came may have written: its records' marks are
// unknown and possibly ours (a resubscribe clears them), never confirmed,
// and never taken for someone else's, even where the record was already
// true before it.
func TestBatchReadingFirstWithoutAnAnswerLeavesTheMarkUnknown(t *testing.T) {
	var log []string
	theirs, fresh := "003000000000001AAA", "003000000000002AAA"
	l := newLedger(salesField, &log, map[string]optout.Entry{
		"theirs": optedOut(t, "sc-theirs", theirs, "Contact"), "fresh": optedOut(t, "sc-fresh", fresh, "Contact")})
	lost := &salesforce.Error{Op: "read and update opt-out", Code: salesforce.CodeTransport, Message: "connection reset", Class: salesforce.Retryable}
	sf := &fakeSF{log: &log, set: map[string]bool{theirs: true}, answers: []func(salesforce.Update) (salesforce.Result, error){
		func(salesforce.Update) (salesforce.Result, error) { return salesforce.Result{Err: lost}, lost }}}
	cfg := pusherConfig(&fakeDLQ{})
	cfg.ReadFirst = true
	rep, err := sfwrite.Batch(context.Background(), cfg, l, sf, people(l, "theirs", "fresh"))
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range rep.Outcomes {
		if o.Kind != sfwrite.Failed || o.Class != salesforce.Retryable {
			t.Fatalf("outcome %d %+v; want Failed, retried later", i, o)
		}
	}
	for k, e := range l.entries {
		if e.Confirmed != nil || !e.SetByUs || !e.Dirty(salesField) || e.Writing != nil {
			t.Fatalf("%s: %+v; want the value unknown, possibly ours, still due, the claim released", k, e)
		}
	}
	// The next attempt does not read: the mark may be our lost write's.
	rep, err = sfwrite.Batch(context.Background(), cfg, l, &fakeSF{log: &log, set: sf.set,
		answers: []func(salesforce.Update) (salesforce.Result, error){ok}}, people(l, "theirs", "fresh"))
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range l.entries {
		if e.Confirmed == nil || !*e.Confirmed || !e.SetByUs {
			t.Fatalf("%s after the retry: %+v; want confirmed and possibly ours", k, e)
		}
	}
	if rep.Outcomes[0].Kind != sfwrite.Confirmed {
		t.Fatalf("retry outcome %+v; want Confirmed (possibly ours), not FoundSet", rep.Outcomes[0])
	}
}

// What the ledger knows spares the read: a clear, and an entry that says
// our push may already have set the mark. Within one batch, a call without
// an answer is retried without the read.
func TestBatchReadsOnlyWhatTheLedgerDoesNotKnow(t *testing.T) {
	var log []string
	fresh, mine, clear := "003000000000001AAA", "003000000000002AAA", "003000000000003AAA"
	mineEntry := optedOut(t, "sc-mine", mine, "Contact")
	mineEntry, _, _ = optout.Attempt(mineEntry, optout.Write{SalesforceID: mine, Field: salesField, Value: true}, salesField)
	clearEntry := optedOut(t, "sc-clear", clear, "Contact")
	clearEntry, _ = optout.Wrote(clearEntry, optout.Write{SalesforceID: clear, Field: salesField, Value: true, Current: true, OK: true}, salesField)
	clearEntry, _ = optout.Fold(clearEntry, true, optout.EventInput{ID: "r1", Action: optout.Resubscribe, OccurredAt: now,
		SalesforceID: clear, ObjectType: "Contact", SalesConnectID: "sc-clear"}, salesField)
	l := newLedger(salesField, &log, map[string]optout.Entry{"fresh": optedOut(t, "sc-fresh", fresh, "Contact"), "mine": mineEntry, "clear": clearEntry})
	lost := &salesforce.Error{Op: "read and update opt-out", Code: salesforce.CodeTransport, Message: "connection reset", Class: salesforce.Retryable}
	sf := &fakeSF{log: &log, answers: []func(salesforce.Update) (salesforce.Result, error){
		func(salesforce.Update) (salesforce.Result, error) { return salesforce.Result{Err: lost}, lost }, ok}}
	cfg := pusherConfig(&fakeDLQ{})
	cfg.ReadFirst, cfg.Attempts, cfg.AttemptBackoff = true, 2, time.Millisecond
	ps := people(l, "fresh", "mine", "clear")
	ps[2].Value = false
	rep, err := sfwrite.Batch(context.Background(), cfg, l, sf, ps)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sf.read) != "[[true false false] [false false false]]" {
		t.Fatalf("reads per call %v; want only the fresh opt-out read, and nothing after the lost answer", sf.read)
	}
	for i, o := range rep.Outcomes {
		if o.Kind != sfwrite.Confirmed {
			t.Fatalf("outcome %d %+v; want Confirmed", i, o)
		}
	}
	if e := l.entries["fresh"]; !e.SetByUs {
		t.Fatalf("fresh: %+v; want possibly ours (its first write may have landed)", e)
	}
}
