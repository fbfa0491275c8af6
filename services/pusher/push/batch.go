package push

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/salesforce"
	"github.com/optout-sync/optout-sync/shared/sfcreds"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

const tracerName = "github.com/optout-sync/optout-sync/services/pusher"

// item is one delivered message on its way through a batch.
type item struct {
	msg   jetstream.Msg
	ctx   context.Context
	span  trace.Span
	ev    *optoutv1.OptOutEvent
	key   string
	entry ledger.Entry
	index int  // position in the batch's Salesforce call
	done  bool // acked, naked or dead-lettered
}

// Header names on DLQ copies beyond event.HeaderError/HeaderErrorCode.
const (
	HeaderOriginalSubject = "Optout-Original-Subject"
	HeaderStreamSequence  = "Optout-Stream-Sequence"
	HeaderErrorClass      = "Optout-Error-Class"
)

// process handles one batch of a tenant's messages. Every message leaves
// it acked (effect durable), naked with a delay (to retry), or copied to
// the DLQ and acked (never applicable).
func (r *runner) process(ctx context.Context, msgs []jetstream.Msg) {
	s := r.svc
	items := make([]*item, 0, len(msgs))
	for _, m := range msgs {
		ictx, span := natsx.StartProcessSpan(ctx, m, s.Topology.TenantConsumer(r.tenant))
		items = append(items, &item{msg: m, ctx: ictx, span: span})
	}
	defer func() {
		for _, it := range items {
			if !it.done { // a path forgot this message: redeliver rather than lose it
				r.retry(it, errors.New("not settled"))
			}
			it.span.End()
		}
	}()

	var valid []*item
	for _, it := range items {
		ev, err := event.Decode(event.Subject(r.tenant), it.msg.Data(), it.msg.Headers(), s.Now())
		if err != nil {
			r.deadLetter(it, err, string(event.CodeOf(err)), "invalid")
			continue
		}
		it.ev = ev
		it.span.SetAttributes(attribute.String("optout.tenant", r.tenant), attribute.String("optout.action", ev.GetAction().String()))
		valid = append(valid, it)
	}
	if len(valid) == 0 {
		return
	}

	client, err := s.Clients.Get(ctx, r.tenant)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, sfcreds.ErrNoCredentials) {
			reason = "no Salesforce credentials configured: add the tenant's Secret; its opt-outs wait until then"
		}
		r.setMode(tenant.ModeUnhealthy, reason, s.Cfg.HealthRecheck)
		r.hold(valid, s.Cfg.HealthRecheck, err)
		return
	}
	field := s.settings(r.tenant).TargetField()

	// Fold every event into the ledger first: that decides ordering and what
	// Salesforce must be told, and makes a parked opt-out durable.
	for _, it := range valid {
		it.key = ledger.Key(r.tenant, it.ev.GetPerson().GetSalesConnectId(), it.ev.GetPerson().GetSalesforceId())
	}
	perPerson(valid, func(it *item) {
		traceID := it.span.SpanContext().TraceID().String()
		entry, err := s.Ledger.Update(ctx, it.key, func(e *ledger.Entry, exists bool) (bool, error) {
			if !exists {
				known, err := r.knownToSalesforce(ctx, it)
				if err != nil {
					return false, err
				}
				if known != nil {
					*e, exists = *known, true
				}
			}
			return applyEvent(e, exists, it.ev, field, traceID), nil
		})
		if err != nil {
			r.retry(it, fmt.Errorf("ledger: %w", err))
			return
		}
		it.entry = entry
		if entry.State == ledger.StateParked {
			s.Metrics.parked(r.tenant)
		}
		if !pending(&entry, field).needed {
			r.ack(it, "settled without a write: "+entry.Reason)
		}
	})
	var toWrite []*item
	for _, it := range valid {
		if !it.done {
			toWrite = append(toWrite, it)
		}
	}
	if len(toWrite) == 0 {
		return
	}
	r.write(ctx, client, field, toWrite)
}

// knownToSalesforce returns what the reconciler recorded for the person's
// Salesforce id before Sales Connect knew them (an `sf.<id>` entry), so the
// first event that links the two starts from that opt-out instead of from
// nothing: a later link honours it.
func (r *runner) knownToSalesforce(ctx context.Context, it *item) (*ledger.Entry, error) {
	p := it.ev.GetPerson()
	if p.GetSalesConnectId() == "" || p.GetSalesforceId() == "" {
		return nil, nil
	}
	e, _, err := r.svc.Ledger.Get(ctx, ledger.Key(r.tenant, "", p.GetSalesforceId()))
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e.SalesConnectID = p.GetSalesConnectId()
	e.RecentEvents = append([]string(nil), e.RecentEvents...)
	return &e, nil
}

// write sends the pending values in one Collections call (the client splits
// beyond 200) and settles each message by its record's result.
func (r *runner) write(ctx context.Context, client sfcreds.Client, field string, items []*item) {
	s := r.svc
	if field != tenant.StandardField {
		var ok bool
		if items, ok = r.skipSetElsewhere(ctx, client, field, items); !ok || len(items) == 0 {
			return
		}
	}
	updates := make([]salesforce.Update, len(items))
	links := make([]trace.Link, len(items))
	for i, it := range items {
		it.index = i
		w := pending(&it.entry, field)
		updates[i] = salesforce.Update{ID: it.entry.SalesforceID, Type: it.entry.ObjectType, Field: field, Value: w.value}
		links[i] = trace.Link{SpanContext: it.span.SpanContext()}
	}
	// The batch span's parent is its first record's span, so a lone opt-out
	// (the real-time common case) is one trace from publisher to Salesforce;
	// every record's span links to it and it links back to each of them.
	bctx, bspan := otel.Tracer(tracerName).Start(items[0].ctx, "push batch",
		trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("optout.tenant", r.tenant), attribute.String("salesforce.field", field),
			attribute.Int("messaging.batch.message_count", len(items))))
	for _, it := range items {
		it.span.AddLink(trace.Link{SpanContext: bspan.SpanContext()})
	}
	results, err := client.UpdateOptOut(bctx, updates)
	if err != nil {
		bspan.RecordError(err)
		bspan.SetStatus(codes.Error, salesforce.ClassOf(err).String())
	}
	bspan.End()
	s.Metrics.call(r.tenant)

	if err != nil && len(results) != len(items) {
		r.failAll(items, err)
		return
	}
	var transient atomic.Bool
	perPerson(items, func(it *item) {
		i := it.index
		res := results[i]
		switch {
		case res.Success:
			r.confirmed(ctx, it, field, updates[i].Value)
		case res.Err != nil && res.Err.Code == "CANNOT_UPDATE_CONVERTED_LEAD":
			r.followConversion(ctx, client, field, it, updates[i].Value)
		default:
			cause := errors.New("salesforce reported failure without an error")
			if res.Err != nil {
				cause = res.Err
			}
			if r.settleFailure(it, cause) {
				transient.Store(true)
			}
		}
	})
	if transient.Load() {
		r.callFailed(fmt.Sprint(err))
	} else {
		r.callSucceeded()
	}
}

// perPerson runs fn over items concurrently across people and in order for
// each person: ledger round trips dominate a batch, and entries of different
// people never contend.
func perPerson(items []*item, fn func(*item)) {
	groups := map[string][]*item{}
	var order []string
	for _, it := range items {
		if _, ok := groups[it.key]; !ok {
			order = append(order, it.key)
		}
		groups[it.key] = append(groups[it.key], it)
	}
	sem := make(chan struct{}, ledgerConcurrency)
	var wg sync.WaitGroup
	for _, k := range order {
		sem <- struct{}{}
		wg.Add(1)
		go func(g []*item) {
			defer func() { <-sem; wg.Done() }()
			for _, it := range g {
				fn(it)
			}
		}(groups[k])
	}
	wg.Wait()
}

// ledgerConcurrency bounds a batch's concurrent ledger updates.
const ledgerConcurrency = 32

// skipSetElsewhere reads the sales field of the records about to be opted
// out and settles those already true without writing: the mark is someone
// else's (a sales user, automation), so a later resubscribe must not clear
// it. One read per type and batch is the price of never reverting an
// opt-out we did not make.
func (r *runner) skipSetElsewhere(ctx context.Context, client sfcreds.Client, field string, items []*item) ([]*item, bool) {
	byType := map[string][]*item{}
	var rest []*item
	for _, it := range items {
		if pending(&it.entry, field).value {
			byType[it.entry.ObjectType] = append(byType[it.entry.ObjectType], it)
		} else {
			rest = append(rest, it)
		}
	}
	for typ, group := range byType {
		ids := make([]string, len(group))
		for i, it := range group {
			ids[i] = it.entry.SalesforceID
		}
		recs, err := client.Retrieve(group[0].ctx, typ, ids, []string{"Id", field})
		r.svc.Metrics.call(r.tenant)
		if err != nil {
			r.failAll(items, err)
			return nil, false
		}
		for i, it := range group {
			if i < len(recs) && recs[i] != nil && recs[i].Bool(field) {
				r.setElsewhere(ctx, it, field)
				continue
			}
			rest = append(rest, it)
		}
	}
	return rest, true
}

// setElsewhere records a Salesforce value we found, not made, and acks.
func (r *runner) setElsewhere(ctx context.Context, it *item, field string) {
	now := r.svc.Now().UTC()
	sfID := it.entry.SalesforceID
	_, err := r.svc.Ledger.Update(ctx, it.key, func(e *ledger.Entry, _ bool) (bool, error) {
		if e.SalesforceID != sfID || e.Field != field {
			return false, nil
		}
		v := true
		e.Confirmed, e.ConfirmedAt, e.SetByUs = &v, now, false
		settle(e, field)
		e.Reason = field + " was already set in Salesforce (not by optout-sync), so no write was needed"
		return true, nil
	})
	if err != nil {
		r.retry(it, fmt.Errorf("ledger: %w", err))
		return
	}
	r.ack(it, "already set in Salesforce")
}

// failAll settles every item of a call that failed as a whole.
func (r *runner) failAll(items []*item, err error) {
	for _, it := range items {
		if it.done {
			continue
		}
		r.settleFailure(it, err)
	}
	if salesforce.ClassOf(err) == salesforce.Retryable {
		r.callFailed(err.Error())
	}
}

// settleFailure acts on one record's failure by its class; it reports
// whether the failure was transient.
func (r *runner) settleFailure(it *item, err error) (transient bool) {
	s := r.svc
	switch class := salesforce.ClassOf(err); class {
	case salesforce.PermanentRecord:
		_, lerr := s.Ledger.Update(it.ctx, it.key, func(e *ledger.Entry, _ bool) (bool, error) {
			e.State, e.Reason = ledger.StateFailed, "Salesforce refused the record: "+err.Error()
			return true, nil
		})
		if lerr != nil {
			r.retry(it, fmt.Errorf("ledger: %w", lerr))
			return false
		}
		r.deadLetter(it, err, codeOf(err), class.String())
	case salesforce.Quota:
		r.setMode(tenant.ModePaused, "daily API allowance spent: "+err.Error(), s.Cfg.QuotaPause)
		r.hold([]*item{it}, s.Cfg.QuotaPause, err)
	case salesforce.Auth, salesforce.PermanentTenant:
		r.setMode(tenant.ModeUnhealthy, err.Error(), s.Cfg.HealthRecheck)
		r.hold([]*item{it}, s.Cfg.HealthRecheck, err)
	default:
		r.retry(it, err)
		return true
	}
	return false
}

// followConversion writes the opt-out to the Contact a converted Lead became.
func (r *runner) followConversion(ctx context.Context, client sfcreds.Client, field string, it *item, value bool) {
	leadID := it.entry.SalesforceID
	recs, err := client.Retrieve(ctx, "Lead", []string{leadID}, []string{"Id", "ConvertedContactId"})
	if err != nil {
		r.settleFailure(it, err)
		return
	}
	var contactID string
	if len(recs) == 1 && recs[0] != nil {
		if v, ok := recs[0].Get("ConvertedContactId"); ok {
			contactID, _ = v.(string)
		}
	}
	if contactID == "" {
		r.settleFailure(it, &salesforce.Error{Op: "follow converted lead", Code: "CANNOT_UPDATE_CONVERTED_LEAD",
			Message: "converted lead has no ConvertedContactId", Class: salesforce.PermanentRecord})
		return
	}
	res, err := client.UpdateOptOut(ctx, []salesforce.Update{{ID: contactID, Type: "Contact", Field: field, Value: value}})
	r.svc.Metrics.call(r.tenant)
	if err == nil && len(res) == 1 && !res[0].Success {
		err = res[0].Err
	}
	if err != nil {
		r.settleFailure(it, err)
		return
	}
	_, lerr := r.svc.Ledger.Update(ctx, it.key, func(e *ledger.Entry, _ bool) (bool, error) {
		e.SalesforceID, e.ObjectType = contactID, "Contact"
		return true, nil
	})
	if lerr != nil {
		r.retry(it, fmt.Errorf("ledger: %w", lerr))
		return
	}
	it.entry.SalesforceID = contactID
	r.confirmed(ctx, it, field, value)
}

// confirmed records what Salesforce now holds and acks.
func (r *runner) confirmed(ctx context.Context, it *item, field string, value bool) {
	s := r.svc
	now := s.Now().UTC()
	sfID := it.entry.SalesforceID
	entry, err := s.Ledger.Update(ctx, it.key, func(e *ledger.Entry, _ bool) (bool, error) {
		if e.SalesforceID != sfID || e.Field != field {
			return false, nil // superseded by a newer event; it will push its own value
		}
		v := value
		e.Confirmed, e.ConfirmedAt = &v, now
		e.SetByUs = value
		settle(e, field)
		if e.State == ledger.StateSynced {
			e.Reason = fmt.Sprintf("Salesforce confirmed %s=%t", field, value)
		}
		return true, nil
	})
	if err != nil {
		r.retry(it, fmt.Errorf("ledger: %w", err))
		return
	}
	it.entry = entry
	s.Metrics.pushed(r.tenant, now.Sub(it.ev.GetOccurredAt().AsTime()))
	r.ack(it, "pushed")
}

// ack settles a message whose effect is durable.
func (r *runner) ack(it *item, why string) {
	if err := it.msg.Ack(); err != nil {
		// The effect is durable; a lost ack only means an idempotent redelivery.
		r.log.Warn().Ctx(it.ctx).Err(err).Msg("ack failed")
	}
	it.span.SetAttributes(attribute.String("optout.outcome", why))
	it.done = true
}

// retry redelivers after a per-message backoff, or dead-letters the message
// once it has been retried for longer than the retry horizon.
func (r *runner) retry(it *item, cause error) {
	s := r.svc
	md, mdErr := it.msg.Metadata()
	if mdErr == nil && s.Now().Sub(md.Timestamp) > s.Cfg.RetryHorizon {
		s.Metrics.horizonExceeded(r.tenant)
		if it.key != "" {
			_, _ = s.Ledger.Update(it.ctx, it.key, func(e *ledger.Entry, _ bool) (bool, error) {
				e.State, e.Reason = ledger.StateFailed, "still failing after the retry horizon: "+cause.Error()
				return true, nil
			})
		}
		r.deadLetter(it, fmt.Errorf("retried for over %s: %w", s.Cfg.RetryHorizon, cause), "retry_horizon_exceeded", "retryable")
		return
	}
	var n uint64 = 1
	if mdErr == nil {
		n = md.NumDelivered
	}
	delay := s.backoff(n)
	var sfErr *salesforce.Error
	if errors.As(cause, &sfErr) && sfErr.RetryAfter > delay {
		delay = min(sfErr.RetryAfter, s.Cfg.BackoffMax)
	}
	r.nak(it, delay, cause)
}

// hold gives messages back to wait out a pause; they keep their place.
func (r *runner) hold(items []*item, delay time.Duration, cause error) {
	for _, it := range items {
		if !it.done {
			r.nak(it, delay, cause)
		}
	}
}

func (r *runner) nak(it *item, delay time.Duration, cause error) {
	it.span.RecordError(cause)
	it.span.SetAttributes(attribute.String("optout.outcome", "retry"), attribute.Int64("optout.retry_in_ms", delay.Milliseconds()))
	if err := it.msg.NakWithDelay(delay); err != nil {
		r.log.Warn().Ctx(it.ctx).Err(err).Msg("nak failed; the message returns after AckWait")
	}
	r.log.Debug().Ctx(it.ctx).Err(cause).Dur("retry_in", delay).Msg("opt-out will be retried")
	it.done = true
}

// deadLetter copies the message to the tenant's DLQ subject with the reason
// in headers, then acks it. If the copy fails the message is redelivered:
// it is never acked unless the copy is durable.
func (r *runner) deadLetter(it *item, cause error, code, class string) {
	s := r.svc
	md, _ := it.msg.Metadata()
	dlq := nats.NewMsg(s.Topology.DLQSubject(dlqToken(r.tenant)))
	dlq.Data = it.msg.Data()
	for k, v := range it.msg.Headers() {
		if k == jetstream.MsgIDHeader || k == "traceparent" || k == "tracestate" {
			continue
		}
		dlq.Header[k] = v
	}
	dlq.Header.Set(event.HeaderError, oneLine(cause.Error()))
	dlq.Header.Set(event.HeaderErrorCode, code)
	dlq.Header.Set(HeaderErrorClass, class)
	dlq.Header.Set(HeaderOriginalSubject, it.msg.Subject())
	msgID := ""
	if md != nil {
		seq := fmt.Sprint(md.Sequence.Stream)
		dlq.Header.Set(HeaderStreamSequence, seq)
		msgID = "dlq-" + s.Topology.EventsStream() + "-" + seq
	}
	pub := natsx.Publisher{JS: s.JS, Topology: s.Topology}
	if _, err := pub.Publish(it.ctx, dlq, msgID); err != nil {
		r.log.Error().Ctx(it.ctx).Err(err).Msg("dead-letter copy failed; the message will be redelivered")
		r.nak(it, s.backoff(1), err)
		return
	}
	it.span.SetStatus(codes.Error, code)
	r.log.Warn().Ctx(it.ctx).Str("code", code).Str("class", class).Str("reason", oneLine(cause.Error())).Msg("opt-out sent to the DLQ")
	s.Metrics.deadLettered(r.tenant, class)
	r.ack(it, "dead-lettered: "+code)
}

// dlqToken keeps a malformed tenant token from producing an invalid subject.
func dlqToken(tenant string) string {
	if event.ValidTenant(tenant) {
		return tenant
	}
	return "unknown"
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
