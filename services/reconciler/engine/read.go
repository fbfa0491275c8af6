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
	"github.com/optout-sync/optout-sync/shared/domain/optout"
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

// diff reads both sides and classifies every person (a full scan), or
// only those changed on either side since the watermark (incremental); it
// returns the plan.
func (r *run) diff(ctx, sfctx context.Context) (*diff.Plan, error) {
	e := r.e
	var th throttle
	save := func() error { return r.save(ctx, time.Time{}, "") }

	// Where this attempt reads both sides from, marked before either read
	// begins, each on its own side's clock: Salesforce's (the Date of its
	// last response, the limits and describe calls) and the ledger
	// stream's position. What changes during the run is after the mark,
	// so the next incremental run reads it again rather than skips it.
	r.markSF = r.b.ServerTime()
	pos, err := e.Ledger.Position(ctx)
	if err != nil {
		return nil, err
	}
	r.markLedger = pos

	var src source
	if r.scanKind() == runs.ScanIncremental {
		src, err = r.readIncremental(ctx, sfctx, &th, save)
	} else {
		src, err = r.readFull(ctx, sfctx, &th, save)
	}
	if err != nil {
		return nil, err
	}
	cl := src.cl
	if err := r.followConversions(ctx, sfctx, cl); err != nil {
		return nil, err
	}
	cl.Finish()

	// Confirmed opt-outs missing from the true-set: deleted, or really
	// cleared? Only a read by id tells (an incremental run already read
	// the records it saw cleared).
	found := make(map[idset.ID]diff.Found)
	var ids []idset.ID
	for _, id := range cl.LookupIDs() {
		if at, ok := src.cleared[id]; ok {
			found[id] = diff.Found{Value: false, Modstamp: at}
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) > 0 {
		if err := r.enter(ctx, runs.PhaseLookingUp); err != nil {
			return nil, err
		}
		kctx, span := e.tracer().Start(sfctx, "reconcile.lookup", trace.WithAttributes(attribute.Int("reconcile.ids", len(ids))))
		err := sfread.Lookup(kctx, r.client, r.field, ids, func(f sfread.Found) {
			found[f.ID] = diff.Found{Value: f.Value, Modstamp: f.Modstamp}
		})
		endSpan(span, err)
		if err != nil {
			return nil, err
		}
	}
	cl.Resolve(func(id idset.ID) (diff.Found, bool) { f, ok := found[id]; return f, ok })

	plan := cl.Plan // not &cl.Plan: the true-set can be collected now
	if err := r.settleInFlight(ctx, &plan, src.set); err != nil {
		return nil, err
	}
	r.update(func(rep *runs.Report) {
		if !r.diffComplete {
			// The first complete diff is the run's; a resumed attempt's
			// diff no longer shows what was already written.
			rep.Counts = cl.Counts
			rep.Counts.MalformedIDs += src.bad
			rep.Writes.PlannedSalesforce = int64(plan.SFRecords())
			rep.Writes.PlannedSalesConnect = int64(len(plan.LedgerOps))
			rep.Writes.PlannedConfirmations = int64(confirmations(plan.LedgerOps))
			if rep.Scan != nil {
				rep.Scan.SalesforceRead, rep.Scan.LedgerRead = src.sfRead, src.ledgerRead
			}
		}
		// The guard's base is the ledger's opt-outs: an incremental run
		// counts only those it compared, so it takes the last full scan's
		// count when larger (the guard is never looser than a full run's).
		optOuts := max(cl.Counts.LedgerOptOuts, src.guardBase)
		rep.Guard = &runs.Guard{Resubscribes: cl.Resubscribes(), OptOuts: optOuts}
		r.diffComplete = true
	})
	r.ledgerOptOuts = cl.Counts.LedgerOptOuts
	r.log.Info().Str("scan", string(r.scanKind())).Int("salesforce_writes", plan.SFRecords()).Int("sales_connect_changes", len(plan.LedgerOps)).
		Int("lookups", len(ids)).Msg("diff complete")
	if err := save(); err != nil {
		return nil, err
	}
	e.hook(ctx, "after-diff")
	return &plan, nil
}

// source is one read of both sides, fed to a classifier: the true-set
// read, the records read cleared (incremental), and what was read.
type source struct {
	cl         *diff.Classifier
	set        *idset.Set
	cleared    map[idset.ID]int64
	bad        int64
	sfRead     int64
	ledgerRead int64
	guardBase  int64
}

// readFull reads the org's whole opted-out set and streams every ledger
// entry against it.
func (r *run) readFull(ctx, sfctx context.Context, th *throttle, save func() error) (source, error) {
	e, j := r.e, r.job
	field, policy := r.field, r.rep.Policy

	// The Salesforce true-set. A failed checkpoint (fenced out) cancels
	// the read, so a stale holder stops spending API calls too.
	if err := r.enter(ctx, runs.PhaseReadingSalesforce); err != nil {
		return source{}, err
	}
	rctx, cancel := context.WithCancel(sfctx)
	defer cancel()
	rctx, span := e.tracer().Start(rctx, "reconcile.read_salesforce", trace.WithAttributes(attribute.String("salesforce.field", field)))
	opts := e.Cfg.Read
	opts.Tracer = e.tracer()
	res, err := sfread.ReadOptedOut(rctx, r.client, field, opts, r.onPage(ctx, th, save, cancel))
	if th.err != nil {
		err = th.err
	}
	span.SetAttributes(attribute.Int("reconcile.salesforce_opt_outs", setLen(res.Set)), attribute.Int("reconcile.pages", res.Pages))
	endSpan(span, err)
	if err != nil {
		return source{}, err
	}
	r.update(func(rep *runs.Report) { rep.API.ReadPath = res.Paths })
	r.log.Info().Int("salesforce_opt_outs", res.Set.Len()).Int("pages", res.Pages).Interface("paths", res.Paths).
		Int("set_bytes", res.Set.Bytes()).Msg("Salesforce opted-out set read")
	e.hook(ctx, "after-read")

	// The ledger, streamed against it.
	if err := r.enter(ctx, runs.PhaseReadingLedger); err != nil {
		return source{}, err
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
		return source{}, fmt.Errorf("read ledger: %w", err)
	}
	return source{cl: cl, set: res.Set, bad: bad, sfRead: int64(res.Set.Len()), ledgerRead: cl.Counts.LedgerEntries + bad}, nil
}

// onPage counts a page read and saves the progress now and then; a
// failed save (fenced out) cancels the read.
func (r *run) onPage(ctx context.Context, th *throttle, save func() error, cancel func()) func(sfread.Page) {
	return func(p sfread.Page) {
		r.update(func(rep *runs.Report) {
			rep.API.Pages++
			if !r.diffComplete {
				rep.Counts.SalesforceOptOuts += int64(p.Rows)
			}
		})
		r.e.Metrics.page(ctx, r.job.Tenant, p.Path)
		if th.maybe(false, save) != nil {
			cancel()
		}
	}
}

// readIncremental reads what changed on either side since the watermark
// and classifies exactly the persons concerned: every ledger entry
// changed after the ledger mark, and every person a record changed after
// the Salesforce mark (less the overlap) belongs to. The diff stays the
// full scan's (package diff, unchanged): for each person fed, it sees what
// a full scan would (in the true-set when the record now reads true; a
// record read cleared resolves its lookup; any other is read by id), so
// it decides alike. A person changed on neither side was agreed by the
// last complete run and is still: a full scan would plan nothing for it
// (the exception: a record deleted since, which the full scan reports and
// never reverts).
func (r *run) readIncremental(ctx, sfctx context.Context, th *throttle, save func() error) (source, error) {
	e, j := r.e, r.job
	field, policy := r.field, r.rep.Policy
	wm := r.watermark
	since := wm.Salesforce.Add(-e.Cfg.Overlap)
	r.update(func(rep *runs.Report) {
		rep.Scan.Since, rep.Scan.LedgerAfter = since, wm.LedgerSeq
	})

	if err := r.enter(ctx, runs.PhaseReadingSalesforce); err != nil {
		return source{}, err
	}
	rctx, cancel := context.WithCancel(sfctx)
	defer cancel()
	rctx, span := e.tracer().Start(rctx, "reconcile.read_salesforce", trace.WithAttributes(
		attribute.String("salesforce.field", field), attribute.String("reconcile.since", since.Format(time.RFC3339))))
	opts := e.Cfg.Read
	opts.Tracer = e.tracer()
	ch, err := sfread.ReadChanged(rctx, r.client, field, since, opts, func(p sfread.Page) {
		r.update(func(rep *runs.Report) { rep.API.Pages++ })
		e.Metrics.page(ctx, j.Tenant, p.Path)
		if th.maybe(false, save) != nil {
			cancel()
		}
	})
	if th.err != nil {
		err = th.err
	}
	span.SetAttributes(attribute.Int("reconcile.salesforce_changed", ch.Rows), attribute.Int("reconcile.pages", ch.Pages))
	endSpan(span, err)
	if err != nil {
		return source{}, err
	}
	r.update(func(rep *runs.Report) {
		rep.API.ReadPath = ch.Paths
		if !r.diffComplete {
			rep.Counts.SalesforceOptOuts = int64(ch.Set.Len())
		}
	})
	r.log.Info().Int("salesforce_changed", ch.Rows).Int("opted_out", ch.Set.Len()).Int("pages", ch.Pages).
		Time("since", since).Msg("Salesforce records changed since the watermark read")
	e.hook(ctx, "after-read")

	if err := r.enter(ctx, runs.PhaseReadingLedger); err != nil {
		return source{}, err
	}
	lctx, span := e.tracer().Start(ctx, "reconcile.read_ledger", trace.WithAttributes(attribute.Int64("reconcile.after", int64(wm.LedgerSeq))))
	// The persons to compare, by key: memory in proportion to the changes.
	// The persons to compare, each fed to the diff once, at its latest
	// revision. Only keys are held (a person's entry is decoded and
	// classified as it streams by), so memory follows the number of
	// changes, at tens of bytes each: first the newest position of each
	// key changed since the mark (the bucket keeps 16 revisions, so a
	// key may come more than once), then the changes again, classifying
	// each key at that position. A key changed between the two passes is
	// classified at the revision the first saw, or, if that one is gone,
	// left to the next run (its change is after this run's mark).
	const added = 0
	latest := map[string]uint64{}
	var bad, ledgerRead int64
	undecodable := func(key string, err error) {
		bad++
		r.log.Warn().Str("key", key).Err(err).Msg("undecodable ledger entry skipped")
	}
	err = e.Ledger.Scan(lctx, j.Tenant, func(it ledger.ScanItem) error {
		ledgerRead++
		if it.Gone {
			delete(latest, it.Key)
			return nil
		}
		latest[it.Key] = it.Revision
		return nil
	}, undecodable, ledger.Since(wm.LedgerSeq))
	cl := diff.New(j.Tenant, field, policy, ch.Set)
	var mu sync.Mutex // cl and latest, fed from the workers below
	if err == nil && len(latest) > 0 {
		err = e.Ledger.Scan(lctx, j.Tenant, func(it ledger.ScanItem) error {
			if rev, ok := latest[it.Key]; ok && rev == it.Revision && !it.Gone {
				cl.Add(it.Key, it.Entry)
				latest[it.Key] = added
			}
			return nil
		}, nil, ledger.Since(wm.LedgerSeq))
	}
	// Every person a changed record belongs to (by its alias, as a Change
	// Data Capture batch finds them), read by a few workers.
	if err == nil {
		ids := make(chan idset.ID)
		gctx, cancel := context.WithCancel(lctx)
		var wg sync.WaitGroup
		var firstErr error
		for range max(1, e.Cfg.LedgerWorkers) {
			wg.Go(func() {
				for id := range ids {
					it, err := e.Ledger.Get(gctx, optout.Key(j.Tenant, "", id.String()), ledger.ViaAlias(), ledger.FollowMerges())
					if errors.Is(err, ledger.ErrNotFound) {
						continue
					}
					mu.Lock()
					rev, seen := latest[it.Key]
					switch {
					case err != nil:
						if firstErr == nil {
							firstErr = fmt.Errorf("read the person of a changed record: %w", err)
							cancel()
						}
					case !seen || rev != added:
						cl.Add(it.Key, it.Entry)
						latest[it.Key] = added
					}
					mu.Unlock()
				}
			})
		}
		send := func(id idset.ID) bool {
			select {
			case ids <- id:
				return true
			case <-gctx.Done():
				return false
			}
		}
		func() {
			defer close(ids)
			for i := range ch.Set.Len() {
				if id, _ := ch.Set.At(i); !send(id) {
					return
				}
			}
			for id := range ch.Cleared {
				if !send(id) {
					return
				}
			}
		}()
		wg.Wait()
		cancel()
		err = firstErr
		if err == nil {
			err = lctx.Err()
		}
	}
	span.SetAttributes(attribute.Int64("reconcile.ledger_entries", cl.Counts.LedgerEntries), attribute.Int64("reconcile.undecodable", bad))
	endSpan(span, err)
	if err != nil {
		return source{}, fmt.Errorf("read ledger: %w", err)
	}
	return source{cl: cl, set: ch.Set, cleared: ch.Cleared, bad: bad, sfRead: int64(ch.Rows), ledgerRead: ledgerRead,
		guardBase: wm.LedgerOptOuts}, nil
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
