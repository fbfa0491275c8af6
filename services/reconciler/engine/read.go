package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/services/reconciler/sfread"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// progressEvery throttles checkpoint writes while reading: progress stays
// fresh for optoutctl without a KV write per page.
const progressEvery = time.Second

// throttle saves the checkpoint at most every progressEvery.
type throttle struct {
	mu   sync.Mutex
	last time.Time
	err  error
}

func (t *throttle) maybe(force bool, save func() error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil || (!force && time.Since(t.last) < progressEvery) {
		return t.err
	}
	t.last = time.Now()
	t.err = save()
	return t.err
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "failed")
	}
	span.End()
}

// diff reads both sides and classifies every person; it returns the plan.
func (r *run) diff(ctx, sfctx context.Context) (*diff.Plan, error) {
	e, j := r.e, r.job
	field, policy := r.field, r.rep.Policy
	var th throttle
	save := func() error { return r.save(ctx, time.Time{}, "") }

	// The Salesforce true-set. A failed checkpoint (fenced out) cancels
	// the read, so a stale holder stops spending API calls too.
	if err := r.enter(ctx, runs.PhaseReadingSalesforce); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(sfctx)
	defer cancel()
	rctx, span := e.tracer().Start(rctx, "reconcile.read_salesforce", trace.WithAttributes(attribute.String("salesforce.field", field)))
	opts := e.Cfg.Read
	opts.Tracer = e.tracer()
	res, err := sfread.ReadOptedOut(rctx, r.client, field, opts, func(p sfread.Page) {
		r.update(func(rep *runs.Report) {
			rep.API.Pages++
			if !r.diffComplete {
				rep.Counts.SalesforceOptOuts += int64(p.Rows)
			}
		})
		e.Metrics.page(ctx, j.Tenant, p.Path)
		if th.maybe(false, save) != nil {
			cancel()
		}
	})
	if th.err != nil {
		err = th.err
	}
	span.SetAttributes(attribute.Int("reconcile.salesforce_opt_outs", setLen(res.Set)), attribute.Int("reconcile.pages", res.Pages))
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	r.update(func(rep *runs.Report) { rep.API.ReadPath = res.Paths })
	r.log.Info().Int("salesforce_opt_outs", res.Set.Len()).Int("pages", res.Pages).Interface("paths", res.Paths).
		Int("set_bytes", res.Set.Bytes()).Msg("Salesforce opted-out set read")
	e.hook(ctx, "after-read")

	// The ledger, streamed against it.
	if err := r.enter(ctx, runs.PhaseReadingLedger); err != nil {
		return nil, err
	}
	cl := diff.New(j.Tenant, field, policy, res.Set)
	lctx, span := e.tracer().Start(ctx, "reconcile.read_ledger")
	var bad int64
	err = e.Ledger.Scan(lctx, j.Tenant, func(it ledger.ScanItem) error {
		cl.Add(it.Key, it.Entry)
		if n := cl.Counts.LedgerEntries; n%50000 == 0 {
			r.update(func(rep *runs.Report) {
				if !r.diffComplete {
					rep.Counts.LedgerEntries = n
				}
			})
			return th.maybe(false, save)
		}
		return nil
	}, func(key string, err error) {
		bad++
		r.log.Warn().Str("key", key).Err(err).Msg("undecodable ledger entry skipped")
	})
	span.SetAttributes(attribute.Int64("reconcile.ledger_entries", cl.Counts.LedgerEntries), attribute.Int64("reconcile.undecodable", bad))
	endSpan(span, err)
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	if err := r.followConversions(ctx, sfctx, cl); err != nil {
		return nil, err
	}
	cl.Finish()

	// Confirmed opt-outs missing from the true-set: deleted, or really
	// cleared? Only a read by id tells.
	ids := cl.LookupIDs()
	found := make(map[idset.ID]diff.Found, len(ids))
	if len(ids) > 0 {
		if err := r.enter(ctx, runs.PhaseLookingUp); err != nil {
			return nil, err
		}
		kctx, span := e.tracer().Start(sfctx, "reconcile.lookup", trace.WithAttributes(attribute.Int("reconcile.ids", len(ids))))
		err := sfread.Lookup(kctx, r.client, field, ids, func(f sfread.Found) {
			found[f.ID] = diff.Found{Value: f.Value, Modstamp: f.Modstamp}
		})
		endSpan(span, err)
		if err != nil {
			return nil, err
		}
	}
	cl.Resolve(func(id idset.ID) (diff.Found, bool) { f, ok := found[id]; return f, ok })

	plan := cl.Plan // not &cl.Plan: the true-set can be collected now
	if err := r.settleInFlight(ctx, &plan, res.Set); err != nil {
		return nil, err
	}
	r.update(func(rep *runs.Report) {
		if !r.diffComplete {
			// The first complete diff is the run's; a resumed attempt's
			// diff no longer shows what was already written.
			rep.Counts = cl.Counts
			rep.Counts.MalformedIDs += bad
			rep.Writes.PlannedSalesforce = int64(plan.SFRecords())
			rep.Writes.PlannedSalesConnect = int64(len(plan.LedgerOps))
			rep.Writes.PlannedConfirmations = int64(confirmations(plan.LedgerOps))
		}
		rep.Guard = &runs.Guard{Resubscribes: cl.Resubscribes(), OptOuts: cl.Counts.LedgerOptOuts}
		r.diffComplete = true
	})
	r.log.Info().Int("salesforce_writes", plan.SFRecords()).Int("sales_connect_changes", len(plan.LedgerOps)).
		Int("lookups", len(ids)).Msg("diff complete")
	if err := save(); err != nil {
		return nil, err
	}
	e.hook(ctx, "after-diff")
	return &plan, nil
}

// followConversions finds the Contacts of the true-set no entry referred
// to that Salesforce converted from a Lead the ledger knows (by the Lead's
// alias), and has the diff compare that person on its Contact.
func (r *run) followConversions(ctx, sfctx context.Context, cl *diff.Classifier) error {
	contacts := cl.UnreferencedContacts()
	if len(contacts) == 0 {
		return nil
	}
	kctx, span := r.e.tracer().Start(sfctx, "reconcile.follow_conversions", trace.WithAttributes(attribute.Int("reconcile.contacts", len(contacts))))
	type conv struct{ lead, contact idset.ID }
	var found []conv
	err := sfread.ConvertedInto(kctx, r.client, contacts, func(lead, contact idset.ID) { found = append(found, conv{lead, contact}) })
	endSpan(span, err)
	if err != nil {
		return err
	}
	for _, c := range found {
		key, ok, err := r.e.Ledger.KeyOf(ctx, r.job.Tenant, c.lead.String())
		if err != nil {
			return fmt.Errorf("follow a converted Lead: %w", err)
		}
		if !ok {
			continue // a Lead the ledger never knew: its Contact is a new person
		}
		it, err := r.e.Ledger.Get(ctx, key, ledger.FollowMerges())
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("follow a converted Lead: %w", err)
		}
		cl.Converted(c.lead, c.contact, it.Key, it.Entry)
	}
	return nil
}

func confirmations(ops []diff.LedgerOp) int {
	n := 0
	for _, op := range ops {
		if op.Kind == diff.Confirm {
			n++
		}
	}
	return n
}

// settleInFlight counts the batch an interrupted attempt was writing when
// it stopped (its counts died with it): what of it the new diff no longer
// plans was written by that attempt. A Sales Connect change counts when
// its entry carries the change's event (published before the entry is
// written, so the event went out too); a Salesforce write when the record
// now shows the opt-out. What is still planned is written, and counted, by
// this attempt.
func (r *run) settleInFlight(ctx context.Context, plan *diff.Plan, set *idset.Set) error {
	f := r.resumed
	if f == nil {
		return nil
	}
	var changes, events, confirms, sfWritten int64
	switch f.Side {
	case runs.SideSalesConnect:
		planned := make(map[string]bool, len(f.Ops))
		for _, op := range f.Ops {
			planned[op.Key] = false
		}
		for _, op := range plan.LedgerOps {
			if _, ok := planned[op.Key]; ok {
				planned[op.Key] = true
			}
		}
		for _, op := range f.Ops {
			if planned[op.Key] {
				continue
			}
			if op.EventID == "" {
				confirms++
				continue
			}
			it, err := r.e.Ledger.Get(ctx, op.Key)
			if errors.Is(err, ledger.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("count the interrupted batch: %w", err)
			}
			if it.Entry.DecidedBy == op.EventID {
				changes++
				events++
			}
		}
	case runs.SideSalesforce:
		planned := make(map[idset.ID]bool, len(f.Ops))
		for _, w := range plan.SFWrites {
			planned[w.ID] = true
		}
		// A write whose confirmation the stopped attempt did not record
		// is planned again as a confirmation, counted when made.
		toConfirm := make(map[idset.ID]bool)
		for _, op := range plan.LedgerOps {
			if op.Kind == diff.Confirm {
				toConfirm[op.ID] = true
			}
		}
		for _, op := range f.Ops {
			id, err := idset.Parse(op.SalesforceID)
			if err != nil || planned[id] || set == nil {
				continue
			}
			if _, ok := set.Find(id); ok {
				sfWritten++
				if !toConfirm[id] {
					confirms++
				}
			}
		}
	}
	r.update(func(rep *runs.Report) {
		rep.Writes.LedgerWritten += changes + confirms
		rep.Writes.LedgerConfirmations += confirms
		rep.Writes.EventsPublished += events
		rep.Writes.SalesforceWritten += sfWritten
	})
	r.log.Info().Str("side", f.Side).Int("batch", len(f.Ops)).Int64("changes", changes).Int64("confirmations", confirms).
		Int64("salesforce_written", sfWritten).Msg("counted the batch the interrupted attempt was writing")
	r.resumed = nil
	return nil
}

func setLen(s *idset.Set) int {
	if s == nil {
		return 0
	}
	return s.Len()
}
