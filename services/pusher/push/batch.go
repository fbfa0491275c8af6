package push

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/pusher/queue"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/dupes"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const tracerName = "github.com/optout-sync/optout-sync/services/pusher"

// workItem is one person of a batch as the queue gave it: its key, the hint
// of its entry, whether its events are held for the batch.
type workItem = queue.Work[ledger.Snapshot]

// batch is what one batch learnt of its persons' held events: the
// revision at which a read or write left each person clean.
type batch struct {
	mu    sync.Mutex
	clean map[string]uint64
}

func (b *batch) leftClean(key string, rev uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clean[key] = max(b.clean[key], rev)
}

func (b *batch) cleanAt(key string) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clean[key]
}

// person is one dirty person in a batch, as read (At; At.Held: this
// runner holds events of the person unacked, held.begin, so the batch's
// writes leave the dirty set alone), with the deciding event's trace.
type person struct {
	sfwrite.Person
	ctx context.Context
}

// pushBatch writes each person's current desired value through the write
// protocol (sfwrite.Batch) and puts each person where its outcome says.
func (r *runner) pushBatch(ctx context.Context, b *batch, work []workItem) {
	s := r.svc
	client, err := s.Clients.Get(ctx, r.tenant)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, sfcreds.ErrNoCredentials) {
			reason = "no Salesforce credentials configured: add the tenant's Secret; its opt-outs wait in the ledger until then"
		}
		r.health.Set(tenant.ModeUnhealthy, reason, s.Cfg.HealthRecheck)
		r.requeue(work, s.Cfg.HealthRecheck)
		return
	}
	field := s.settings(r.tenant).TargetField()
	target := targetOf(field)
	began := time.Now()
	people := r.read(ctx, b, work, field)
	s.Metrics.stage(StageRead, target, time.Since(began))
	if len(people) == 0 {
		return
	}
	ps := make([]*sfwrite.Person, len(people))
	links := make([]trace.Link, 0, len(people))
	for i, p := range people {
		ps[i] = &p.Person
		if sc := trace.SpanContextFromContext(p.ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	// The batch span's parent is its first person's ingest span, so a lone
	// opt-out (the real-time common case) is one trace from publisher to
	// Salesforce; it links every person's.
	bctx, bspan := otel.Tracer(tracerName).Start(people[0].ctx, "push batch",
		trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("optout.tenant", r.tenant), attribute.String("salesforce.field", field),
			attribute.Int("messaging.batch.message_count", len(people))))
	rep, err := sfwrite.Batch(bctx, sfwrite.Config{
		Field: field, ClaimTTL: s.Cfg.ClaimTTL, Now: s.Now, Workers: ledgerConcurrency,
		ReadFirst: true,
		Backoff:   s.backoff, BackoffMax: s.Cfg.BackoffMax, RetryHorizon: s.Cfg.RetryHorizon,
		DeadLetter: sfwrite.DeadLetterFunc(r.deadLetter),
		Timed: func(stage string, d time.Duration) {
			s.Metrics.stage(map[string]string{sfwrite.StageWrite: StageSalesforceWrite,
				sfwrite.StageRecord: StageConfirm}[stage], target, d)
		},
	}, r.writer(field), client, ps)
	if rep.CallErr != nil {
		bspan.RecordError(rep.CallErr)
		bspan.SetStatus(codes.Error, salesforce.ClassOf(rep.CallErr).String())
	}
	bspan.End()
	for range rep.Calls {
		s.Metrics.call(r.tenant)
	}
	var transient error // the first record's transient failure: the breaker's reason
	held := false       // a record failed for the tenant as a whole: not a success
	for i, o := range rep.Outcomes {
		if r.settle(b, people[i], field, o, err) && transient == nil {
			transient = o.Cause
		}
		held = held || o.Kind == sfwrite.TenantHeld
	}
	if s.settings(r.tenant).DuplicatesByEmail {
		r.duplicates(ctx, client, field, ps, rep.Outcomes)
	}
	switch {
	case rep.CallErr != nil:
		if salesforce.ClassOf(rep.CallErr) == salesforce.Retryable {
			r.health.CallFailed(rep.CallErr.Error())
		}
	case transient != nil:
		r.health.CallFailed(transient.Error())
	case !held && rep.Writes > 0:
		r.health.CallSucceeded()
	}
}

// duplicates applies the opt-outs the batch got confirmed to the other
// Leads and Contacts with the same address (tenant setting
// DuplicatesByEmail), each as a person of its own, and queues them: they go
// out in the next batch, through the same protocol. A failure is logged and
// left to the nightly run, which looks for duplicates again.
func (r *runner) duplicates(ctx context.Context, client sfcreds.Client, field string, ps []*sfwrite.Person, outs []sfwrite.Outcome) {
	var ids []string
	for i, o := range outs {
		if !ps[i].Value || (o.Kind != sfwrite.Confirmed && o.Kind != sfwrite.FoundSet) {
			continue
		}
		// The entry as recorded when the outcome carries it, else as written.
		e := o.At.Entry
		if o.At.Rev == 0 {
			e = ps[i].At.Entry
		}
		if dupes.IsSource(e) {
			ids = append(ids, e.SalesforceID)
		}
	}
	if len(ids) == 0 {
		return
	}
	res, err := dupes.Flow{Tenant: r.tenant, SF: client, Ledger: r.svc.Ledger, Writer: r.writer(field)}.Apply(ctx, nil, ids)
	for range res.Calls {
		r.svc.Metrics.call(r.tenant)
	}
	if err != nil {
		r.log.Warn().Err(err).Int("persons", len(ids)).Msg("duplicates by email: not applied now; the nightly run looks for them again")
	}
	for _, k := range res.Keys {
		r.q.Add(k)
	}
	if len(res.Keys) > 0 {
		r.log.Info().Int("duplicates", len(res.Keys)).Msg("duplicates by email opted out")
	}
}

// settle puts one person where its outcome says (stopped: the batch's
// error, for a person it never wrote); it reports whether the person's
// failure was transient.
func (r *runner) settle(b *batch, p *person, field string, o sfwrite.Outcome, stopped error) (transient bool) {
	s := r.svc
	now := s.Now()
	switch o.Kind {
	case sfwrite.NotWritten:
		if stopped != nil {
			r.log.Warn().Ctx(p.ctx).Err(stopped).Msg("the batch stopped before its write; the person is pushed again")
		}
		r.q.AddAfter(p.Key, s.backoff(1))
	case sfwrite.Confirmed:
		if e := o.At.Entry; e.Dirty(field) {
			r.q.Offer(p.Key, o.At.Rev, o.At, nil)
		} else {
			b.leftClean(p.Key, o.At.Rev)
			if p.Value {
				s.Metrics.pushed(r.tenant, now.UTC().Sub(e.DecidedAt))
			}
		}
	case sfwrite.Moved:
		r.q.Add(p.Key)
	case sfwrite.HeldElsewhere:
		r.q.AddAfter(p.Key, o.Until.Sub(now))
	case sfwrite.FoundSet, sfwrite.Converted:
		r.q.Forget(p.Key)
		r.q.Add(p.Key) // looked at again: settled, or moved meanwhile
	case sfwrite.Failed:
		r.q.Forget(p.Key) // the entry moved past any hint
		r.q.AddAfter(p.Key, o.Wait)
		return true
	case sfwrite.DeadLettered:
		r.q.Forget(p.Key)
		if o.HorizonExceeded {
			s.Metrics.horizonExceeded(r.tenant)
		}
		return o.Class == salesforce.Retryable
	case sfwrite.TenantHeld:
		if o.Class == salesforce.Quota {
			r.health.Set(tenant.ModePaused, "daily API allowance spent: "+o.Cause.Error(), s.Cfg.QuotaPause)
			r.q.AddAfter(p.Key, s.Cfg.QuotaPause)
		} else {
			r.health.Set(tenant.ModeUnhealthy, o.Cause.Error(), s.Cfg.HealthRecheck)
			r.q.AddAfter(p.Key, s.Cfg.HealthRecheck)
		}
	case sfwrite.LedgerFailed:
		r.q.Forget(p.Key)
		r.log.Warn().Ctx(p.ctx).Err(o.Cause).Msg("recording a write or its outcome failed; the person is pushed again")
		r.q.AddAfter(p.Key, max(o.Wait, s.backoff(1)))
		return o.Class == salesforce.Retryable
	}
	return false
}

// read loads the batch's persons and keeps those with a write due now.
func (r *runner) read(ctx context.Context, b *batch, work []workItem, field string) []*person {
	s := r.svc
	out := make([]*person, len(work))
	each(work, func(i int, w workItem) {
		key, queued := w.Key, w.Key
		owed := w.Held // this replica holds the person's events
		at := w.Hint
		if !w.Hinted {
			it, err := s.Ledger.Get(ctx, key, ledger.FollowMerges())
			if err != nil {
				if !errors.Is(err, ledger.ErrNotFound) {
					r.log.Warn().Err(err).Msg("reading a person failed; retried by the sweep")
				}
				return
			}
			key, at.Entry, at.Rev = it.Key, it.Entry, it.Rev
			if key != queued {
				// A retired entry's marker (put by a writer racing the
				// merge): never dirty again, so no later write removes it.
				// Its held events are marked and acked when due.
				owed = false
				if err := r.writer(field).Forget(ctx, queued); err != nil {
					r.log.Warn().Err(err).Msg("clearing a merged entry's dirty marker failed")
				}
			}
		}
		e := at.Entry
		value, write := e.Target(field)
		if !write {
			if key == queued {
				b.leftClean(key, at.Rev)
			}
			if owed {
				return // queued by its fold: there is no marker to clear
			}
			// A stale marker (another replica pushed it, or it settled).
			if err := r.writer(field).Forget(ctx, key); err != nil {
				r.log.Warn().Err(err).Msg("clearing a stale dirty marker failed")
			}
			return
		}
		now := s.Now()
		if wait := e.Retry.NextAttempt.Sub(now); wait > 0 {
			r.q.AddAfter(key, wait)
			return
		}
		if held := e.HeldAgainst(nil, value, now); held != nil {
			// Another writer's call is in flight: its report requeues the
			// person there if a write is still due; this looks again when
			// the claim ends, in case that writer died.
			r.q.AddAfter(key, held.Until.Sub(now))
			return
		}
		out[i] = &person{Person: sfwrite.Person{Key: key, At: ledger.Snapshot{Entry: e, Rev: at.Rev, Mark: at.Mark, Held: owed}, Value: value}, ctx: traceContext(ctx, e.TraceParent)}
	})
	kept := out[:0]
	once := map[string]bool{}
	for _, p := range out {
		// Two keys of one batch may lead to one person (a merge): write it once.
		if p != nil && !once[p.Key] {
			once[p.Key] = true
			kept = append(kept, p)
		}
	}
	return kept
}

// targetOf names a field for the stage histogram without its API name
// (tenants name their sales field as they like).
func targetOf(field string) string {
	if field == tenant.StandardField {
		return "email"
	}
	return "sales"
}

func traceContext(ctx context.Context, traceParent string) context.Context {
	if traceParent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceParent})
}

// each runs fn over items concurrently (ledger round trips dominate a
// batch; entries of different people never contend).
func each[T any](items []T, fn func(int, T)) {
	_ = sfwrite.Parallel(context.Background(), ledgerConcurrency, items, func(_ context.Context, i int, it T) error {
		fn(i, it)
		return nil
	})
}

// ledgerConcurrency bounds a batch's concurrent ledger round trips.
const ledgerConcurrency = 32

// writer is the runner's writer of field (the tenant's target field).
func (r *runner) writer(field string) *ledger.Writer { return r.svc.Ledger.Writer(r.tenant, field) }

// marker puts a person's dirty marker for a held event about to be settled.
func (r *runner) marker() func(context.Context, string) error {
	w := r.writer(r.svc.settings(r.tenant).TargetField())
	return func(ctx context.Context, key string) error { return w.Mark(ctx, key, nil) }
}

// requeue puts a batch's persons back after d (a held tenant: no attempt
// is counted).
func (r *runner) requeue(work []workItem, d time.Duration) {
	for _, w := range work {
		r.q.AddAfter(w.Key, d)
	}
}

// deadLetter copies the event that decided a given-up person to the DLQ.
func (r *runner) deadLetter(ctx context.Context, e optout.Entry, cause error, code, class string) {
	s := r.svc
	ev := &optoutv1.OptOutEvent{
		EventId: e.DecidedBy, TenantId: r.tenant,
		Person: &optoutv1.Person{SalesConnectId: e.SalesConnectID, SalesforceId: e.SalesforceID},
		Action: optoutv1.Action_UNSUBSCRIBE,
	}
	if !e.Wanted(s.settings(r.tenant).TargetField()) {
		ev.Action = optoutv1.Action_RESUBSCRIBE
	}
	if e.LastEvent != nil {
		ev.OccurredAt, ev.Reason = timestamppb.New(e.LastEvent.OccurredAt), e.LastEvent.Reason
		if e.LastEvent.ID != e.DecidedBy {
			ev.OccurredAt = timestamppb.New(e.DecidedAt)
		}
	} else {
		ev.OccurredAt = timestamppb.New(e.DecidedAt)
	}
	switch e.ObjectType {
	case "Contact":
		ev.Person.ObjectType = optoutv1.ObjectType_CONTACT
	case "Lead":
		ev.Person.ObjectType = optoutv1.ObjectType_LEAD
	}
	data, ctype, err := event.Encode(ev, true)
	if err != nil {
		r.log.Error().Ctx(ctx).Err(err).Msg("encoding a dead letter failed")
		return
	}
	letter := deadletter.Letter{Tenant: r.tenant, Subject: s.Topology.EventsSubject(r.tenant),
		Header: map[string][]string{event.HeaderContentType: {ctype}}, Data: data,
		Cause: cause, Code: code, Class: class}
	if err := s.ingester.DLQ.Write(ctx, letter); err != nil {
		// The person stays FAILED in the ledger, which is the record.
		r.log.Error().Ctx(ctx).Err(err).Msg("dead-letter copy could not be written; the ledger keeps the failure")
		s.Metrics.deadLetterUnwritable(r.tenant, class)
		return
	}
	r.log.Warn().Ctx(ctx).Str("code", code).Str("class", class).Str("reason", oneLine(cause.Error())).Msg("opt-out sent to the DLQ")
	s.Metrics.deadLettered(r.tenant, class)
}

func oneLine(s string) string { return sfwrite.OneLine(s) }
