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
		if err := r.e.Runs.CheckFence(ctx, r.job.Tenant, r.fence); err != nil {
			return err
		}
		bctx, span := r.e.tracer().Start(ctx, "reconcile.write_ledger_batch", traceAttrs(attribute.Int("reconcile.changes", len(batch))))
		err := each(bctx, r.e.Cfg.LedgerWorkers, batch, r.applyOp)
		endSpan(span, err)
		if err != nil {
			return err
		}
		if err := r.save(ctx, time.Time{}, ""); err != nil {
			return err
		}
	}
	return nil
}

// observation is what op learnt from Salesforce, as the state machine
// takes it.
func (r *run) observation(op diff.LedgerOp, evID string, value bool) optout.Observation {
	return optout.Observation{EventID: evID, SalesforceID: op.ID.String(), ObjectType: op.ID.Type(), Field: r.field,
		Value: value, At: time.UnixMilli(op.At).UTC(), Now: r.e.now()}
}

// commitAllowed re-checks, right before a commit, that this holder still
// holds the lease by its own clock and that no newer holder has raised the
// tenant's fence.
func (r *run) commitAllowed(ctx context.Context) error {
	if !r.job.Lease.Valid() {
		return errLeaseExpired
	}
	return r.e.Runs.CheckFence(ctx, r.job.Tenant, r.fence)
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
	reason := "Salesforce shows " + field + " true (nightly reconcile)"
	if !value {
		action, reason = optoutv1.Action_RESUBSCRIBE, "Salesforce cleared "+field+" after the opt-out (latest-wins, nightly reconcile)"
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
		if err := r.commitAllowed(ctx); err != nil {
			return err
		}
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
		// The fence is checked (and the checkpoint written) right before
		// each call; Salesforce itself cannot check it, but the write only
		// ever sets true, which a newer holder would write as well.
		if err := r.e.Runs.CheckFence(ctx, r.job.Tenant, r.fence); err != nil {
			return err
		}
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

type outcome struct {
	t    sfTarget
	ok   bool
	code string
}

// reread keeps the records whose entries still want the opt-out written
// now, with the revisions the confirmation will compare against: a
// resubscribe (or a push) made after the diff is never overwritten. A
// Salesforce-side clear being written back is first recorded as seen, so
// the state machine itself says the write is due.
func (r *run) reread(ctx context.Context, batch []sfTarget, claim *optout.Claim) ([]sfTarget, map[idset.ID][]sfwrite.Person, error) {
	field := r.field
	var mu sync.Mutex
	keep := map[idset.ID][]sfwrite.Person{}
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
				p := sfwrite.Person{Key: key, At: ledger.Snapshot{Entry: e, Rev: rev}, Value: true}
				if claim != nil {
					// As the push does: the mark about to be made is ours, so
					// say so before making it (a run that dies mid-call must not
					// leave a true the next reader takes for someone else's),
					// and take the batch's claim, so no push writes the person
					// until this write is over.
					a, err := sfwrite.Attempt(ctx, r.ledger, field, &p, claim, r.e.now())
					if err != nil {
						return err
					}
					if !a.Ok() {
						continue // changed since the re-read, or a push is writing it: the push or the next run sees it
					}
				}
				mu.Lock()
				keep[t.id] = append(keep[t.id], p)
				mu.Unlock()
			}
		}
		return nil
	})
	var out []sfTarget
	for _, t := range batch {
		if len(keep[t.id]) > 0 {
			out = append(out, t)
		}
	}
	return out, keep, err
}

func (r *run) writeBatch(ctx context.Context, batch []sfTarget) error {
	if err := r.commitAllowed(ctx); err != nil {
		return err
	}
	// Sales-field writes hold a claim on their persons (optout.Claim);
	// Email Opt Out is only ever set, so writers need not take turns.
	claim, callDeadline := sfwrite.Claim(r.field, r.e.now(), r.e.Cfg.ClaimTTL)
	batch, entries, err := r.reread(ctx, batch, claim)
	if err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	// The re-read took round trips: check the lease again right before the
	// call Salesforce cannot fence.
	if err := r.commitAllowed(ctx); err != nil {
		return err
	}
	field := r.field
	pending := batch
	var done []outcome
	// The writes must end while the claim holds: after it ends the push
	// may write the persons, and a write of ours must not land then.
	callCtx := ctx
	if claim != nil {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithDeadline(ctx, callDeadline)
		defer cancel()
	}
	for attempt := 1; len(pending) > 0; attempt++ {
		if callCtx.Err() != nil && ctx.Err() == nil {
			// The claim's time is up: what is left is recorded as not
			// confirmed (the push writes it), never written without it.
			for _, t := range pending {
				done = append(done, outcome{t: t, code: "CLAIM_ENDED"})
			}
			break
		}
		updates := make([]salesforce.Update, len(pending))
		for i, t := range pending {
			updates[i] = salesforce.Update{ID: t.id.String(), Type: t.id.Type(), Field: field, Value: true}
		}
		results, err := r.client.UpdateOptOut(budget.WithKind(callCtx, budget.Write), updates)
		if err != nil && callCtx.Err() != nil && ctx.Err() == nil {
			continue // the claim ended mid-call: settled at the top
		}
		if err != nil {
			if salesforce.ClassOf(err) != salesforce.Retryable || errors.Is(err, budget.ErrExhausted) || attempt >= r.e.Cfg.WriteAttempts {
				return fmt.Errorf("write %d records: %w", len(pending), err)
			}
			if err := sfwrite.Sleep(ctx, r.e.Cfg.WriteBackoff<<(attempt-1)); err != nil {
				return err
			}
			continue
		}
		var retry []sfTarget
		for i, res := range results {
			switch {
			case res.Success:
				done = append(done, outcome{t: pending[i], ok: true})
			case salesforce.ClassOf(res.Err) == salesforce.Retryable && attempt < r.e.Cfg.WriteAttempts:
				retry = append(retry, pending[i])
			default:
				code := "UNKNOWN"
				if res.Err != nil {
					code = res.Err.Code
				}
				done = append(done, outcome{t: pending[i], code: code})
			}
		}
		pending = retry
		if len(pending) > 0 {
			if err := sfwrite.Sleep(ctx, r.e.Cfg.WriteBackoff<<(attempt-1)); err != nil {
				return err
			}
		}
	}
	var ok, failed int64
	for _, o := range done {
		if o.ok {
			ok++
		} else {
			failed++
		}
	}
	r.update(func(rep *runs.Report) {
		rep.Writes.SalesforceWritten += ok
		rep.Writes.SalesforceFailed += failed
	})
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "written", ok)
	r.e.Metrics.write(ctx, r.job.Tenant, "salesforce", "failed", failed)
	// Record each outcome on the ledger entries of the record, on the
	// revisions read before the write.
	var items []keyOutcome
	for _, o := range done {
		for _, c := range entries[o.t.id] {
			items = append(items, keyOutcome{cur: c, o: o})
		}
	}
	return each(ctx, r.e.Cfg.LedgerWorkers, items, r.recordOutcome)
}

type keyOutcome struct {
	cur sfwrite.Person
	o   outcome
}

// recordOutcome records a write through the state machine: confirmed if
// the entry has not moved since it was re-read, else Salesforce's value is
// unknown and the person stays dirty for the push.
func (r *run) recordOutcome(ctx context.Context, ko keyOutcome) error {
	res, err := sfwrite.Record(ctx, r.ledger, r.field, &ko.cur, ko.o.ok, r.e.now())
	if err != nil {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
		return err
	}
	if res.Changed {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerWritten++ })
	}
	return nil
}

func sameID(s string, id idset.ID) bool {
	k, err := idset.Parse(s)
	return err == nil && k == id
}
