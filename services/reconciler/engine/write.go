package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// each runs fn over items with the run's ledger workers (sfwrite.Parallel).
func each[T any](ctx context.Context, workers int, items []T, fn func(context.Context, T) error) error {
	return sfwrite.Parallel(ctx, workers, items, func(ctx context.Context, _ int, it T) error { return fn(ctx, it) })
}

// writeSalesConnect applies the Sales Connect side of the plan: ledger
// entries (fenced) and, for what was learnt from Salesforce, an applied
// event published before the entry is written, so a crash in between
// re-publishes (deduplicated) rather than loses it.
func (r *run) writeSalesConnect(ctx context.Context, ops []diff.LedgerOp) error {
	if len(ops) == 0 {
		return nil
	}
	if err := r.enter(ctx, runs.PhaseWritingSalesConnect); err != nil {
		return err
	}
	size := max(r.e.Cfg.LedgerBatch, 1)
	for start := 0; start < len(ops); start += size {
		batch := ops[start:min(start+size, len(ops))]
		r.e.hook(ctx, "before-ledger-batch")
		if err := ctx.Err(); err != nil {
			return err
		}
		// The batch is recorded as in flight first: an attempt stopped in
		// its middle cannot count it, the one that resumes does.
		r.setInFlight(r.ledgerInFlight(batch))
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
		bctx, span := r.e.tracer().Start(ctx, "reconcile.write_ledger_batch", traceAttrs(attribute.Int("reconcile.changes", len(batch))))
		err := each(bctx, r.e.Cfg.LedgerWorkers, batch, r.applyOp)
		endSpan(span, err)
		if err != nil {
			return err
		}
		// Recorded at once, so a resumed attempt reports this batch too.
		r.setInFlight(nil)
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) setInFlight(f *runs.InFlight) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = f
}

// ledgerInFlight names a Sales Connect batch's writes and the events its
// changes announce.
func (r *run) ledgerInFlight(batch []diff.LedgerOp) *runs.InFlight {
	f := &runs.InFlight{Side: runs.SideSalesConnect, Ops: make([]runs.InFlightOp, len(batch))}
	for i, op := range batch {
		f.Ops[i] = runs.InFlightOp{Key: op.Key, SalesforceID: op.ID.String()}
		if op.Kind != diff.Confirm && op.Kind != diff.FollowConversion {
			f.Ops[i].EventID = eventID(r.job.Tenant, op.ID, opAction(op.Kind), op.At)
		}
	}
	return f
}

func opAction(k diff.OpKind) optoutv1.Action {
	if k == diff.ApplyResubscribe {
		return optoutv1.Action_RESUBSCRIBE
	}
	return optoutv1.Action_UNSUBSCRIBE
}

// observation is what op learnt from Salesforce, as the state machine
// takes it.
func (r *run) observation(op diff.LedgerOp, evID string, value bool) optout.Observation {
	o := optout.Observation{EventID: evID, SalesforceID: op.ID.String(), ObjectType: op.ID.Type(), Field: r.field,
		Value: value, At: time.UnixMilli(op.At).UTC(), Now: r.e.now()}
	if r.live {
		o.Via = "Change Data Capture"
	}
	return o
}

func (r *run) applyOp(ctx context.Context, op diff.LedgerOp) error {
	e := r.e
	field := r.field
	if op.Follows() {
		// The Lead was converted: the person follows it to the Contact
		// first, the way every writer does (sfwrite.FollowConversion).
		res, err := sfwrite.FollowConversion(ctx, r.ledger, op.Key, op.FromLead.String(), op.ID.String())
		if err != nil {
			r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
			return fmt.Errorf("follow Lead %s to Contact %s: %w", op.FromLead, op.ID, err)
		}
		if res.Changed {
			r.update(func(rep *runs.Report) { rep.Writes.LeadsFollowed++ })
		}
		if op.Kind == diff.FollowConversion {
			return nil
		}
	}
	if op.Kind == diff.Confirm {
		e.hook(ctx, "before-ledger-write")
		res, err := r.ledger.Update(ctx, op.Key, optout.ObservedStep(op.ID.String(), field, true))
		if err != nil {
			r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
			return err
		}
		if res.Changed {
			r.update(func(rep *runs.Report) { rep.Writes.LedgerWritten++; rep.Writes.LedgerConfirmations++ })
			e.Metrics.write(ctx, r.job.Tenant, "ledger", op.Kind.String(), 1)
		}
		return nil
	}
	value := op.Kind != diff.ApplyResubscribe
	action := opAction(op.Kind)
	via := "nightly reconcile"
	if r.live {
		via = "Change Data Capture"
	}
	reason := "Salesforce shows " + field + " true (" + via + ")"
	if !value {
		reason = "Salesforce cleared " + field + " after the opt-out (latest-wins, " + via + ")"
	}
	evID := eventID(r.job.Tenant, op.ID, action, op.At)
	o := r.observation(op, evID, value)
	// The entry as it is now, through the state machine: Sales Connect
	// hears of the change only if it becomes the person's wish.
	it, err := e.Ledger.Get(ctx, op.Key)
	cur, exists := it.Entry, err == nil
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	if exists && cur.MergedInto != "" {
		return nil // the person lives under another key, which the diff saw too
	}
	next, changed := optout.Learnt(cur, exists, o, field)
	if !changed {
		return nil
	}
	announce := next.DecidedBy == evID && (!exists || cur.OptedOut != value)
	if announce {
		e.hook(ctx, "before-applied")
		// A duplicate is this change's event published by an attempt
		// stopped before the entry was written: it is counted below, with
		// the entry, once.
		if _, err := r.publishApplied(ctx, evID, op.ID, cur.SalesConnectID, action, op.At, reason); err != nil {
			return err
		}
	}
	e.hook(ctx, "before-ledger-write")
	res, err := r.ledger.Update(ctx, op.Key, optout.LearntStep(o))
	if err != nil {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
		return err
	}
	if res.Changed {
		r.update(func(rep *runs.Report) {
			rep.Writes.LedgerWritten++
			if announce {
				rep.Writes.EventsPublished++
			}
		})
		e.Metrics.write(ctx, r.job.Tenant, "ledger", op.Kind.String(), 1)
	}
	return nil
}

// sfTarget is one record to set true, with the ledger entries to confirm.
type sfTarget struct {
	id   idset.ID
	keys []string
	why  diff.Why
}

func group(writes []diff.SFWrite) []sfTarget {
	var out []sfTarget
	for _, w := range writes { // sorted by id
		if n := len(out); n > 0 && out[n-1].id == w.ID {
			out[n-1].keys = append(out[n-1].keys, w.Key)
			continue
		}
		out = append(out, sfTarget{id: w.ID, keys: []string{w.Key}, why: w.Why})
	}
	return out
}

// writeSalesforce sets the field true on every planned record, WriteBatch
// records per sObject Collections call, until done or the budget runs out.
func (r *run) writeSalesforce(ctx, sfctx context.Context, writes []diff.SFWrite) error {
	targets := group(writes)
	if len(targets) == 0 {
		return nil
	}
	if err := r.enter(ctx, runs.PhaseWritingSalesforce); err != nil {
		return err
	}
	size := min(max(r.e.Cfg.WriteBatch, 1), salesforce.MaxCollectionRecords)
	for start := 0; start < len(targets); start += size {
		left := int64(len(targets) - start)
		batch := targets[start:min(start+size, len(targets))]
		r.e.hook(ctx, "before-sf-batch")
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.b.Remaining() < 1 {
			r.update(func(rep *runs.Report) { rep.Writes.Remaining = left })
			return fmt.Errorf("%w before writing %d records", budget.ErrExhausted, left)
		}
		// The checkpoint is written before each call (the protocol checks
		// the writer's fence right before it), naming the batch in flight.
		r.setInFlight(sfInFlight(batch))
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
		bctx, span := r.e.tracer().Start(sfctx, "reconcile.write_salesforce_batch", traceAttrs(attribute.Int("reconcile.records", len(batch))))
		err := r.writeBatch(bctx, batch)
		endSpan(span, err)
		if err != nil {
			r.update(func(rep *runs.Report) { rep.Writes.Remaining = left })
			return err
		}
		// Recorded at once, so a resumed attempt reports these writes too.
		r.setInFlight(nil)
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
	}
	r.update(func(rep *runs.Report) { rep.Writes.Remaining = 0 })
	return nil
}

func sfInFlight(batch []sfTarget) *runs.InFlight {
	f := &runs.InFlight{Side: runs.SideSalesforce, Ops: make([]runs.InFlightOp, len(batch))}
	for i, t := range batch {
		f.Ops[i] = runs.InFlightOp{SalesforceID: t.id.String()}
	}
	return f
}

// reread keeps the persons whose entries still want the opt-out written
// now, with the revisions the confirmation will compare against: a
// resubscribe (or a push) made after the diff is never overwritten. A
// Salesforce-side clear being written back is first recorded as seen, so
// the state machine itself says the write is due.
func (r *run) reread(ctx context.Context, batch []sfTarget) ([]*sfwrite.Person, error) {
	field := r.field
	var mu sync.Mutex
	keep := map[idset.ID][]*sfwrite.Person{}
	err := each(ctx, r.e.Cfg.LedgerWorkers, batch, func(ctx context.Context, t sfTarget) error {
		for _, key := range t.keys {
			it, err := r.e.Ledger.Get(ctx, key)
			e, rev := it.Entry, it.Rev
			if errors.Is(err, ledger.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !sameID(e.SalesforceID, t.id) || e.MergedInto != "" {
				continue
			}
			if t.why != diff.SalesConnectOnly && e.Wanted(field) {
				res, err := r.ledger.Update(ctx, key, optout.ObservedStep(e.SalesforceID, field, false))
				if err != nil {
					return err
				}
				e, rev = res.Entry, res.Rev
			}
			if value, write := e.Target(field); value && write {
				mu.Lock()
				keep[t.id] = append(keep[t.id], &sfwrite.Person{Key: key, At: ledger.Snapshot{Entry: e, Rev: rev}, Value: true})
				mu.Unlock()
			}
		}
		return nil
	})
	var out []*sfwrite.Person
	for _, t := range batch {
		out = append(out, keep[t.id]...)
	}
	return out, err
}

// writeBatch writes one batch through the write protocol (sfwrite.Batch)
// with the run's fenced writer: retryable failures are retried within the
// call loop (WriteAttempts), and a write that still fails is recorded as
// unconfirmed, the person left dirty for the push.
func (r *run) writeBatch(ctx context.Context, batch []sfTarget) error {
	// A Lead converted since the diff is refused by Salesforce and the
	// protocol follows the person to its Contact, which a second round
	// writes now, as the push's next round would.
	for round := 1; round <= 2 && len(batch) > 0; round++ {
		next, err := r.writeRound(ctx, batch, round == 2)
		if err != nil {
			return err
		}
		batch = next
	}
	return nil
}

// writeRound writes one round of a batch and returns the persons followed
// from a converted Lead to its Contact (to write next), unless last.
func (r *run) writeRound(ctx context.Context, batch []sfTarget, last bool) ([]sfTarget, error) {
	people, err := r.reread(ctx, batch)
	if err != nil || len(people) == 0 {
		return nil, err
	}
	cfg := sfwrite.Config{
		Field: r.field, ClaimTTL: r.e.Cfg.ClaimTTL, Now: r.e.now, Workers: r.e.Cfg.LedgerWorkers,
		Attempts: r.e.Cfg.WriteAttempts, AttemptBackoff: r.e.Cfg.WriteBackoff,
		Final: func(err error) bool { return errors.Is(err, budget.ErrExhausted) },
		// A seam for tests: the call is made, its outcomes not yet recorded.
		Timed: func(stage string, _ time.Duration) {
			if stage == sfwrite.StageWrite {
				r.e.hook(ctx, "after-sf-call")
			}
		},
	}
	rep, err := sfwrite.Batch(budget.WithKind(ctx, budget.Write), cfg, r.ledger, r.client, people)
	// Counted per record (persons of one record share its write).
	okIDs, failedIDs := map[string]bool{}, map[string]bool{}
	var ledgerWritten, confirmed, ledgerFailed, followed int64
	var recordErr error
	var next []sfTarget
	for i, o := range rep.Outcomes {
		id := people[i].At.Entry.SalesforceID
		switch o.Kind {
		case sfwrite.Confirmed:
			okIDs[id] = true
		case sfwrite.Converted:
			followed++
			t, ok, err := r.followed(ctx, people[i].Key)
			if err != nil && recordErr == nil {
				recordErr = err
			}
			if !ok || last {
				failedIDs[id] = true
				break
			}
			next = append(next, t)
		case sfwrite.Unconfirmed:
			failedIDs[id] = true
		case sfwrite.LedgerFailed:
			ledgerFailed++
			if recordErr == nil {
				recordErr = o.Cause
			}
		}
		if o.Changed {
			ledgerWritten++
			if o.Kind == sfwrite.Confirmed || o.Kind == sfwrite.FoundSet {
				confirmed++
			}
		}
	}
	ok, failed := int64(len(okIDs)), int64(len(failedIDs))
	r.update(func(rep *runs.Report) {
		rep.Writes.SalesforceWritten += ok
		rep.Writes.SalesforceFailed += failed
		rep.Writes.LedgerWritten += ledgerWritten
		rep.Writes.LedgerConfirmations += confirmed
		rep.Writes.LedgerFailed += ledgerFailed
		rep.Writes.LeadsFollowed += followed
	})
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "written", ok)
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "failed", failed)
	if err != nil {
		return nil, err
	}
	return next, recordErr
}

// followed is the write due for a person the protocol just followed from
// a converted Lead to its Contact.
func (r *run) followed(ctx context.Context, key string) (sfTarget, bool, error) {
	it, err := r.e.Ledger.Get(ctx, key)
	if errors.Is(err, ledger.ErrNotFound) {
		return sfTarget{}, false, nil
	}
	if err != nil {
		return sfTarget{}, false, err
	}
	id, err := idset.Parse(it.Entry.SalesforceID)
	if err != nil {
		return sfTarget{}, false, nil
	}
	return sfTarget{id: id, keys: []string{key}, why: diff.SalesConnectOnly}, true, nil
}

func sameID(s string, id idset.ID) bool {
	k, err := idset.Parse(s)
	return err == nil && k == id
}
