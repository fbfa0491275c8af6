package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/runs"
	"github.com/optout-sync/optout-sync/shared/salesforce"
)

// sourceSalesforce is the ledger Source of what the reconciler learnt from
// Salesforce (the proto's Source enum name).
var sourceSalesforce = optoutv1.Source_SALESFORCE.String()

// parallel runs fn over items with the configured workers and returns the
// first error (the other items still run: each is independent).
func parallel[T any](ctx context.Context, workers int, items []T, fn func(context.Context, T) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range max(1, min(workers, len(items))) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, items[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
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
		err := parallel(bctx, r.e.Cfg.LedgerWorkers, batch, r.applyOp)
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

// applies says whether op still fits the entry as it is now; the same test
// runs inside the compare-and-set, so a change the pusher made meanwhile wins.
func (r *run) applies(op diff.LedgerOp, e *ledger.Entry, exists bool) bool {
	decided := e.DecidedAt.UnixMilli()
	switch op.Kind {
	case diff.ApplyOptOut:
		return exists && !e.OptedOut && op.At > decided
	case diff.RecordOptOut:
		return !exists || (!e.OptedOut && op.At > decided)
	case diff.ApplyResubscribe:
		return exists && e.OptedOut && op.At > decided
	case diff.Confirm:
		if !exists || !e.OptedOut || !sameID(e.SalesforceID, op.ID) {
			return false
		}
		confirmed := e.Confirmed != nil && *e.Confirmed && e.Field == r.field
		return !confirmed || e.State != ledger.StateSynced
	}
	return false
}

func sameID(s string, id idset.ID) bool {
	k, err := idset.Parse(s)
	return err == nil && k == id
}

func (r *run) applyOp(ctx context.Context, op diff.LedgerOp) error {
	e := r.e
	field := r.field
	var evID string
	if op.Kind != diff.Confirm {
		cur, _, _, err := e.Ledger.GetFenced(ctx, op.Key)
		exists := err == nil
		if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		if !r.applies(op, &cur, exists) {
			return nil
		}
		action, reason := optoutv1.Action_UNSUBSCRIBE, "Salesforce shows "+field+" true (nightly reconcile)"
		if op.Kind == diff.ApplyResubscribe {
			action, reason = optoutv1.Action_RESUBSCRIBE, "Salesforce cleared "+field+" after the opt-out (latest-wins, nightly reconcile)"
		}
		evID = eventID(r.job.Tenant, op.ID, action, op.At)
		stored, err := r.publishApplied(ctx, evID, op.ID, cur.SalesConnectID, action, op.At, reason)
		if err != nil {
			return err
		}
		if stored {
			r.update(func(rep *runs.Report) { rep.Writes.EventsPublished++ })
		}
	}
	now := e.now()
	changed := false
	_, err := e.Ledger.FencedUpdate(ctx, op.Key, r.fence, func(en *ledger.Entry, exists bool) (bool, error) {
		changed = false
		if !r.job.Lease.Valid() {
			return false, errLeaseExpired
		}
		if !r.applies(op, en, exists) {
			return false, nil
		}
		yes, no := true, false
		at := time.UnixMilli(op.At).UTC()
		switch op.Kind {
		case diff.Confirm:
			if en.Field != field {
				en.SetByUs = false // what we set was on the other field
			}
			en.Field, en.Confirmed, en.ConfirmedAt = field, &yes, now
			en.State, en.Reason = ledger.StateSynced, "Salesforce shows the opt-out (confirmed by the nightly reconcile)"
		case diff.ApplyOptOut, diff.RecordOptOut:
			if !exists {
				en.Tenant, en.SalesforceID, en.ObjectType = r.job.Tenant, op.ID.String(), op.ID.Type()
				en.Reason = "opt-out learnt from Salesforce for a person Sales Connect has not seen; kept so a later link honours it"
			} else {
				en.Reason = "opt-out learnt from Salesforce (" + field + " true) by the nightly reconcile"
			}
			en.OptedOut, en.DecidedAt, en.DecidedBy, en.Source = true, at, evID, sourceSalesforce
			// Salesforce already shows it; someone other than us set it.
			en.Field, en.Confirmed, en.ConfirmedAt, en.SetByUs = field, &yes, now, false
			en.State = ledger.StateSynced
			en.Remember(evID)
			en.LastEvent = &ledger.Event{ID: evID, Action: "UNSUBSCRIBE", Source: sourceSalesforce, OccurredAt: at,
				Reason: "nightly reconcile: " + field + " is true in Salesforce"}
		case diff.ApplyResubscribe:
			en.Reason = fmt.Sprintf("resubscribe learnt from Salesforce (latest-wins): %s cleared at %s, after the opt-out of %s",
				field, at.Format(time.RFC3339), en.DecidedAt.UTC().Format(time.RFC3339))
			en.OptedOut, en.DecidedAt, en.DecidedBy, en.Source = false, at, evID, sourceSalesforce
			en.Field, en.Confirmed, en.ConfirmedAt, en.SetByUs = field, &no, now, false
			en.State = ledger.StateSynced
			en.Remember(evID)
			en.LastEvent = &ledger.Event{ID: evID, Action: "RESUBSCRIBE", Source: sourceSalesforce, OccurredAt: at,
				Reason: "nightly reconcile: " + field + " was cleared in Salesforce after the opt-out (latest-wins)"}
		}
		changed = true
		return true, nil
	})
	if err != nil {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
		return err
	}
	if changed {
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

func (r *run) writeBatch(ctx context.Context, batch []sfTarget) error {
	if !r.job.Lease.Valid() {
		return errLeaseExpired
	}
	field := r.field
	pending := batch
	var done []outcome
	for attempt := 1; len(pending) > 0; attempt++ {
		updates := make([]salesforce.Update, len(pending))
		for i, t := range pending {
			updates[i] = salesforce.Update{ID: t.id.String(), Type: t.id.Type(), Field: field, Value: true}
		}
		results, err := r.client.UpdateOptOut(budget.WithKind(ctx, budget.Write), updates)
		if err != nil {
			if salesforce.ClassOf(err) != salesforce.Retryable || errors.Is(err, budget.ErrExhausted) || attempt >= r.e.Cfg.WriteAttempts {
				return fmt.Errorf("write %d records: %w", len(pending), err)
			}
			if err := sleep(ctx, r.e.Cfg.WriteBackoff<<(attempt-1)); err != nil {
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
			if err := sleep(ctx, r.e.Cfg.WriteBackoff<<(attempt-1)); err != nil {
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
	// Record each outcome on the ledger entries of the record.
	var items []keyOutcome
	for _, o := range done {
		for _, k := range o.t.keys {
			items = append(items, keyOutcome{key: k, o: o})
		}
	}
	return parallel(ctx, r.e.Cfg.LedgerWorkers, items, r.recordOutcome)
}

type keyOutcome struct {
	key string
	o   outcome
}

func (r *run) recordOutcome(ctx context.Context, ko keyOutcome) error {
	field, now := r.field, r.e.now()
	changed := false
	_, err := r.e.Ledger.FencedUpdate(ctx, ko.key, r.fence, func(en *ledger.Entry, exists bool) (bool, error) {
		changed = false
		if !exists || !en.OptedOut || !sameID(en.SalesforceID, ko.o.t.id) {
			return false, nil // changed meanwhile; the next run looks again
		}
		if !ko.o.ok {
			reason := "the nightly reconcile could not write the opt-out to Salesforce: " + ko.o.code
			if en.Reason == reason {
				return false, nil
			}
			en.Reason = reason
			changed = true
			return true, nil
		}
		yes := true
		en.Field, en.Confirmed, en.ConfirmedAt, en.SetByUs = field, &yes, now, true
		en.State = ledger.StateSynced
		switch ko.o.t.why {
		case diff.WrittenBack:
			en.Reason = "Salesforce-side resubscribe overridden (optout-wins): the opt-out was written back by the nightly reconcile"
		case diff.ClearedBeforeOptOut:
			en.Reason = "Salesforce had cleared the field before the opt-out; written back by the nightly reconcile"
		default:
			en.Reason = "written to Salesforce by the nightly reconcile (opted out in Sales Connect only)"
		}
		changed = true
		return true, nil
	})
	if err != nil {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerFailed++ })
		return err
	}
	if changed {
		r.update(func(rep *runs.Report) { rep.Writes.LedgerWritten++ })
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
