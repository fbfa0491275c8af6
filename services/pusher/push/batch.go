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

// pushBatch writes each person's current desired value and records what
// Salesforce answered through the state machine.
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
	// One claim for the batch (sales field only): each person's Attempt
	// takes it, so no other writer writes them until this call is over and
	// reported. The call must end by deadline, while the claim holds: after
	// it ends another writer may write the person, and this write must not
	// land then.
	claim, deadline := sfwrite.Claim(field, s.Now(), s.Cfg.ClaimTTL)
	if claim != nil {
		if people = r.skipSetElsewhere(ctx, client, field, people, claim); len(people) == 0 {
			return
		}
		if people = r.attemptAll(ctx, field, people, claim); len(people) == 0 {
			return
		}
	}
	updates := make([]salesforce.Update, len(people))
	links := make([]trace.Link, 0, len(people))
	for i, p := range people {
		updates[i] = salesforce.Update{ID: p.At.Entry.SalesforceID, Type: p.At.Entry.ObjectType, Field: field, Value: p.Value}
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
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		bctx, cancel = context.WithDeadline(bctx, deadline)
		defer cancel()
	}
	began = time.Now()
	results, err := client.UpdateOptOut(bctx, updates)
	s.Metrics.stage(StageSalesforceWrite, target, time.Since(began))
	if err != nil {
		bspan.RecordError(err)
		bspan.SetStatus(codes.Error, salesforce.ClassOf(err).String())
	}
	bspan.End()
	s.Metrics.call(r.tenant)
	if err != nil && len(results) != len(people) {
		r.failAll(ctx, people, field, err)
		return
	}
	var mu sync.Mutex
	var transient error // the first record's transient failure: the breaker's reason
	held := false       // a record failed for the tenant as a whole: not a success
	each(people, func(i int, p *person) {
		res := results[i]
		switch {
		case res.Success:
			r.confirmed(ctx, b, p, field)
		case res.Err != nil && res.Err.Code == "CANNOT_UPDATE_CONVERTED_LEAD":
			r.followConversion(ctx, client, field, p)
		default:
			var cause error = res.Err
			if res.Err == nil {
				cause = errors.New("salesforce reported failure without an error")
			}
			isTransient := r.failed(ctx, p, field, cause)
			mu.Lock()
			if isTransient && transient == nil {
				transient = cause
			}
			held = held || salesforce.ClassOf(cause).HoldsTenant()
			mu.Unlock()
		}
	})
	switch {
	case transient != nil:
		r.health.CallFailed(transient.Error())
	case !held:
		r.health.CallSucceeded()
	}
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
		if held := e.HeldAgainst(nil, now); held != nil {
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

// skipSetElsewhere reads the sales field of the records about to be opted
// out and records those already true as someone else's: a later resubscribe
// must not clear a mark we did not make. The others are marked as about to
// be set by us before the write. One read per type and batch.
func (r *runner) skipSetElsewhere(ctx context.Context, client sfcreds.Client, field string, people []*person, claim *optout.Claim) []*person {
	byType := map[string][]*person{}
	var rest []*person
	for _, p := range people {
		if p.Value && !(p.At.Entry.Field == field && p.At.Entry.SetByUs) {
			byType[p.At.Entry.ObjectType] = append(byType[p.At.Entry.ObjectType], p)
		} else {
			rest = append(rest, p)
		}
	}
	var mu sync.Mutex
	for typ, group := range byType {
		ids := make([]string, len(group))
		for i, p := range group {
			ids[i] = p.At.Entry.SalesforceID
		}
		began := time.Now()
		recs, err := client.Retrieve(group[0].ctx, typ, ids, []string{"Id", field})
		r.svc.Metrics.stage(StageSalesforceRead, targetOf(field), time.Since(began))
		r.svc.Metrics.call(r.tenant)
		if err != nil {
			r.failAll(ctx, group, field, err)
			continue
		}
		each(group, func(i int, p *person) {
			if i < len(recs) && recs[i] != nil && recs[i].Bool(field) {
				if _, err := r.writer(field).Update(ctx, p.Key, optout.ObservedStep(p.At.Entry.SalesforceID, field, true), ledger.BasedOn(p.At.Rev)); err != nil {
					r.log.Warn().Err(err).Msg("recording a value found in Salesforce failed")
				}
				r.q.Forget(p.Key)
				r.q.Add(p.Key) // looked at again: settled, or moved meanwhile
				return
			}
			// Salesforce holds false, so the mark about to be made is ours:
			// say so in the ledger before making it, or a replica killed
			// mid-call (or a confirmation the ledger cannot store) leaves
			// it looking like someone else's, never cleared by a resubscribe.
			if !r.attempting(ctx, p, field, claim) {
				return
			}
			mu.Lock()
			rest = append(rest, p)
			mu.Unlock()
		})
	}
	return rest
}

// attempting records that p's write is about to be made, takes the
// batch's claim on p, and rebases p on the revision that says so; false
// leaves p for another round (the entry moved, another writer's claim
// holds it, or the ledger failed).
func (r *runner) attempting(ctx context.Context, p *person, field string, claim *optout.Claim) bool {
	now := r.svc.Now()
	a, err := sfwrite.Attempt(ctx, r.writer(field), field, &p.Person, claim, now)
	switch {
	case err != nil:
		r.log.Warn().Ctx(p.ctx).Err(err).Msg("recording a write before making it failed; the person is pushed again")
		r.q.AddAfter(p.Key, r.svc.backoff(1))
		return false
	case a.Moved:
		r.q.Add(p.Key)
		return false
	case a.Held != nil:
		r.q.AddAfter(p.Key, a.Held.Until.Sub(now))
		return false
	}
	return true
}

// attemptAll records every sales-field write before it is made and takes
// the batch's claim on its person (the clears too, and sets over a value
// confirmed false); Email Opt Out needs neither, being only ever set, so
// two writers' trues in any order leave the same value. It keeps the
// persons still to write.
func (r *runner) attemptAll(ctx context.Context, field string, people []*person, claim *optout.Claim) []*person {
	keep := make([]bool, len(people))
	each(people, func(i int, p *person) {
		keep[i] = p.Claim != nil || r.attempting(ctx, p, field, claim)
	})
	out := people[:0]
	for i, p := range people {
		if keep[i] {
			out = append(out, p)
		}
	}
	return out
}

// confirmed records Salesforce's confirmation of a write made from the
// entry at p.At.Rev; a person that moved meanwhile stays dirty and goes round
// again.
func (r *runner) confirmed(ctx context.Context, b *batch, p *person, field string) {
	s := r.svc
	now := s.Now().UTC()
	began := time.Now()
	res, err := sfwrite.Record(ctx, r.writer(field), field, &p.Person, true, now)
	at := res.Snapshot()
	s.Metrics.stage(StageConfirm, targetOf(field), time.Since(began))
	if err != nil {
		r.log.Warn().Ctx(p.ctx).Err(err).Msg("recording a confirmation failed; the person is pushed again")
		r.q.AddAfter(p.Key, s.backoff(1))
		return
	}
	e := at.Entry
	if e.Dirty(field) {
		r.q.Offer(p.Key, at.Rev, at, nil)
		return
	}
	b.leftClean(p.Key, at.Rev)
	if p.Value {
		s.Metrics.pushed(r.tenant, now.Sub(e.DecidedAt))
	}
}

// failed records one person's failure by its class; it reports whether
// the failure was transient.
func (r *runner) failed(ctx context.Context, p *person, field string, cause error) (transient bool) {
	s := r.svc
	class := salesforce.ClassOf(cause)
	switch class {
	case salesforce.Quota:
		r.health.Set(tenant.ModePaused, "daily API allowance spent: "+cause.Error(), s.Cfg.QuotaPause)
		r.q.AddAfter(p.Key, s.Cfg.QuotaPause)
		return false
	case salesforce.Auth, salesforce.PermanentTenant:
		r.health.Set(tenant.ModeUnhealthy, cause.Error(), s.Cfg.HealthRecheck)
		r.q.AddAfter(p.Key, s.Cfg.HealthRecheck)
		return false
	}
	wait := s.backoff(uint64(p.At.Entry.Retry.Attempts + 1))
	var sfErr *salesforce.Error
	if errors.As(cause, &sfErr) && sfErr.RetryAfter > wait {
		wait = min(sfErr.RetryAfter, s.Cfg.BackoffMax)
	}
	defer r.q.Forget(p.Key) // the entry moved past any hint
	var out optout.FailOutcome
	res, err := r.writer(field).Update(ctx, p.Key, optout.FailedStep(optout.Failure{
		Write:     optout.Write{SalesforceID: p.At.Entry.SalesforceID, Field: field, Value: p.Value, Claim: p.Claim},
		Permanent: class == salesforce.PermanentRecord, Err: oneLine(cause.Error()),
		Wait: wait, Now: s.Now(), Horizon: s.Cfg.RetryHorizon,
	}, &out))
	e := res.Entry
	if err != nil {
		r.log.Warn().Ctx(p.ctx).Err(err).Msg("recording a failure failed; the person is pushed again")
		r.q.AddAfter(p.Key, wait)
		return class == salesforce.Retryable
	}
	if out.DeadLetter {
		if out.HorizonExceeded {
			s.Metrics.horizonExceeded(r.tenant)
		}
		code, cls := codeOf(cause), class.String()
		if out.HorizonExceeded {
			code = "retry_horizon_exceeded"
		}
		r.deadLetter(p.ctx, e, cause, code, cls)
		return class == salesforce.Retryable
	}
	r.q.AddAfter(p.Key, wait)
	return true
}

// failAll settles every person of a call that failed as a whole.
func (r *runner) failAll(ctx context.Context, people []*person, field string, err error) {
	each(people, func(_ int, p *person) { r.failed(ctx, p, field, err) })
	if salesforce.ClassOf(err) == salesforce.Retryable {
		r.health.CallFailed(err.Error())
	}
}

// followConversion points the person at the Contact its converted Lead
// became; the next round writes the Contact.
func (r *runner) followConversion(ctx context.Context, client sfcreds.Client, field string, p *person) {
	leadID := p.At.Entry.SalesforceID
	recs, err := client.Retrieve(ctx, "Lead", []string{leadID}, []string{"Id", "ConvertedContactId"})
	r.svc.Metrics.call(r.tenant)
	if err != nil {
		r.failed(ctx, p, field, err)
		return
	}
	var contactID string
	if len(recs) == 1 && recs[0] != nil {
		if v, ok := recs[0].Get("ConvertedContactId"); ok {
			contactID, _ = v.(string)
		}
	}
	if contactID == "" {
		r.failed(ctx, p, field, &salesforce.Error{Op: "follow converted lead", Code: "CANNOT_UPDATE_CONVERTED_LEAD",
			Message: "converted lead has no ConvertedContactId", Class: salesforce.PermanentRecord})
		return
	}
	if _, err := r.writer(field).Update(ctx, p.Key, optout.ConversionStep(leadID, contactID), ledger.Alias(contactID, leadID)); err != nil {
		r.log.Warn().Ctx(p.ctx).Err(err).Msg("recording a Lead conversion failed; retried")
	}
	r.q.Forget(p.Key)
	r.q.Add(p.Key)
}

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

func codeOf(err error) string {
	var e *salesforce.Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	return "error"
}

func oneLine(s string) string {
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
