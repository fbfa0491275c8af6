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
		bctx, span := r.e.tracer().Start(ctx, "reconcile.write_ledger_batch", traceAttrs(attribute.Int("reconcile.changes", len(batch))))
		err := each(bctx, r.e.Cfg.LedgerWorkers, batch, r.applyOp)
		endSpan(span, err)
		if err != nil {
			return err
		}
		// Recorded at once, so a resumed attempt reports this batch too.
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
	}
	return nil
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
	if op.Kind == diff.Confirm {
		e.hook(ctx, "before-ledger-write")
		res, err := r.ledger.Update(ctx, op.Key, optout.ObservedStep(op.ID.String(), field, true))
		if err != nil {
			r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
			return err
		}
		if res.Changed {
			r.update(func(rep *runs.Report) { rep.Writes.LedgerWritten++ })
			e.Metrics.write(ctx, r.job.Tenant, "ledger", op.Kind.String(), 1)
		}
		return nil
	}
	value := op.Kind != diff.ApplyResubscribe
	action := optoutv1.Action_UNSUBSCRIBE
	via := "nightly reconcile"
	if r.live {
		via = "Change Data Capture"
	}
	reason := "Salesforce shows " + field + " true (" + via + ")"
	if !value {
		action, reason = optoutv1.Action_RESUBSCRIBE, "Salesforce cleared "+field+" after the opt-out (latest-wins, "+via+")"
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
	if next.DecidedBy == evID && (!exists || cur.OptedOut != value) {
		e.hook(ctx, "before-applied")
		stored, err := r.publishApplied(ctx, evID, op.ID, cur.SalesConnectID, action, op.At, reason)
		if err != nil {
			return err
		}
		if stored {
			r.update(func(rep *runs.Report) { rep.Writes.EventsPublished++ })
		}
	}
	e.hook(ctx, "before-ledger-write")
	res, err := r.ledger.Update(ctx, op.Key, optout.LearntStep(o))
	if err != nil {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
		return err
	}
	if res.Changed {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerWritten++ })
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
		// the writer's fence right before it).
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
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
	}
	r.update(func(rep *runs.Report) { rep.Writes.Remaining = 0 })
	return nil
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
	people, err := r.reread(ctx, batch)
	if err != nil || len(people) == 0 {
		return err
	}
	cfg := sfwrite.Config{
		Field: r.field, ClaimTTL: r.e.Cfg.ClaimTTL, Now: r.e.now, Workers: r.e.Cfg.LedgerWorkers,
		Attempts: r.e.Cfg.WriteAttempts, AttemptBackoff: r.e.Cfg.WriteBackoff,
		Final: func(err error) bool { return errors.Is(err, budget.ErrExhausted) },
	}
	rep, err := sfwrite.Batch(budget.WithKind(ctx, budget.Write), cfg, r.ledger, r.client, people)
	// Counted per record (persons of one record share its write).
	okIDs, failedIDs := map[string]bool{}, map[string]bool{}
	var ledgerWritten, ledgerFailed int64
	var recordErr error
	for i, o := range rep.Outcomes {
		id := people[i].At.Entry.SalesforceID
		switch o.Kind {
		case sfwrite.Confirmed:
			okIDs[id] = true
		case sfwrite.Unconfirmed, sfwrite.Converted:
			failedIDs[id] = true
		case sfwrite.LedgerFailed:
			ledgerFailed++
			if recordErr == nil {
				recordErr = o.Cause
			}
		}
		if o.Changed {
			ledgerWritten++
		}
	}
	ok, failed := int64(len(okIDs)), int64(len(failedIDs))
	r.update(func(rep *runs.Report) {
		rep.Writes.SalesforceWritten += ok
		rep.Writes.SalesforceFailed += failed
		rep.Writes.LedgerWritten += ledgerWritten
		rep.Writes.LedgerFailed += ledgerFailed
	})
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "written", ok)
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "failed", failed)
	if err != nil {
		return err
	}
	return recordErr
}

func sameID(s string, id idset.ID) bool {
	k, err := idset.Parse(s)
	return err == nil && k == id
}
