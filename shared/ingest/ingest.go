// Package ingest folds opt-out events into the ledger: decode, fold into
// the person's entry (compare-and-set), ack. From the ack on the ledger, not
// the events stream, holds the event, so nothing ages out while a tenant
// waits. The pusher ingests continuously; the reconciler drains what is
// still waiting before a run, through the same code.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/logx"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// DeadLetters writes the copy of an event that can never be applied.
type DeadLetters interface {
	Write(ctx context.Context, l natsx.Letter) error
}

// Ingester folds one tenant's events into the ledger.
type Ingester struct {
	Ledger   *ledger.Ledger
	Topology natsx.Topology
	DLQ      DeadLetters
	// Field gives the tenant's current opt-out field.
	Field func(tenant string) string
	Now   func() time.Time
}

// Result is what one message became.
type Result struct {
	Key      string
	Entry    ledger.Entry
	Dirty    bool // a Salesforce write is due
	Clamped  bool
	Changed  bool
	Rejected error // the event was invalid and is in the DLQ
}

func (in *Ingester) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

// Handle ingests one delivered message of tenant and settles it: acked once
// its effect (ledger entry, or DLQ copy) is durable, otherwise nak'd with
// delay and the error returned. An invalid event whose DLQ copy cannot be
// written is termed, not redelivered, and the error (an
// natsx.ErrDeadLetterUnwritable) is for the caller to report.
func (in *Ingester) Handle(ctx context.Context, tenant string, msg jetstream.Msg) (Result, error) {
	return in.handle(ctx, tenant, msg, func() error { return msg.Ack() }, func() error { return msg.Term() })
}

// handle is Handle with the ack and term to use: Drain confirms them, so
// what it then reports as still waiting never counts an event it settled
// itself.
func (in *Ingester) handle(ctx context.Context, tenant string, msg jetstream.Msg, ack, term func() error) (Result, error) {
	md, mdErr := msg.Metadata()
	// The canonical subject: a namespace prefixes the stored one.
	ev, err := event.Decode(event.Subject(tenant), msg.Data(), msg.Headers(), in.now())
	if err != nil {
		letter := natsx.Letter{Tenant: tenant, Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
			Cause: err, Code: string(event.CodeOf(err)), Class: "invalid"}
		if mdErr == nil {
			letter.Seq = md.Sequence.Stream
		}
		if werr := in.DLQ.Write(ctx, letter); werr != nil {
			if errors.Is(werr, natsx.ErrDeadLetterUnwritable) {
				// Every attempt failed: never loop on it. Term stops the
				// redeliveries; the events stream (Limits retention) keeps
				// the event, at the sequence the error names.
				_ = term()
				return Result{Rejected: err}, fmt.Errorf("invalid event (%s) at %s sequence %d was termed and is kept only in the events stream: %w",
					event.CodeOf(err), msg.Subject(), letter.Seq, werr)
			}
			_ = msg.NakWithDelay(time.Second)
			return Result{}, werr
		}
		_ = ack()
		return Result{Rejected: err}, nil
	}
	input := Input(ev, msg.Headers(), trace.SpanContextFromContext(ctx), ctx)
	if mdErr == nil {
		input.StoredAt = md.Timestamp
	}
	field := in.Field(tenant)
	res, err := in.Ledger.Ingest(ctx, tenant, input, field)
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return Result{}, fmt.Errorf("ingest %s: %w", ev.GetEventId(), err)
	}
	if err := ack(); err != nil {
		// The effect is durable; a lost ack is an idempotent redelivery.
		return Result{Key: res.Key, Entry: res.Entry, Dirty: res.Entry.Dirty(field), Clamped: res.Clamped, Changed: res.Changed}, nil
	}
	return Result{Key: res.Key, Entry: res.Entry, Dirty: res.Entry.Dirty(field), Clamped: res.Clamped, Changed: res.Changed}, nil
}

// Input is what the state machine needs of a decoded event.
func Input(ev *optoutv1.OptOutEvent, h nats.Header, sc trace.SpanContext, ctx context.Context) ledger.EventInput {
	p := ev.GetPerson()
	action := ledger.OptOut
	if ev.GetAction() == optoutv1.Action_RESUBSCRIBE {
		action = ledger.Resubscribe
	}
	in := ledger.EventInput{
		ID: ev.GetEventId(), Action: action, OccurredAt: ev.GetOccurredAt().AsTime(),
		Source: ev.GetSource().String(), Reason: ev.GetReason(),
		SalesConnectID: p.GetSalesConnectId(), SalesforceID: p.GetSalesforceId(), ObjectType: objectTypeName(p.GetObjectType()),
		Replay: h.Get(natsx.HeaderReplayedFrom) != "",
	}
	if p.GetEmail() != "" {
		in.EmailHash = logx.HashEmail(p.GetEmail())
	}
	if sc.IsValid() {
		in.TraceID = sc.TraceID().String()
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, carrier)
		in.TraceParent = carrier.Get("traceparent")
	}
	return in
}

func objectTypeName(t optoutv1.ObjectType) string {
	switch t {
	case optoutv1.ObjectType_CONTACT:
		return "Contact"
	case optoutv1.ObjectType_LEAD:
		return "Lead"
	}
	return ""
}

// Waiting says how many of tenant's events wait unfolded and since when.
type Waiting struct {
	Count  uint64
	Oldest time.Time
}

// Drain folds every event of tenant still waiting in the events stream,
// through the tenant's durable consumer (shared with the pusher, so nothing
// is folded twice), and returns how many it folded and what still waits
// (events a running pusher holds unacked). An invalid event whose DLQ copy
// cannot be written is settled like the others and reported in the error
// (an natsx.ErrDeadLetterUnwritable) once everything else is folded.
func (in *Ingester) Drain(ctx context.Context, js jetstream.JetStream, tenant string, handled func(Result)) (int, Waiting, error) {
	cons, err := natsx.EnsureTenantConsumer(ctx, js, in.Topology, tenant)
	if err != nil {
		return 0, Waiting{}, err
	}
	n := 0
	var lost []error
	for ctx.Err() == nil {
		info, err := cons.Info(ctx)
		if err != nil {
			return n, Waiting{}, fmt.Errorf("drain %s: %w", tenant, err)
		}
		if info.NumPending == 0 {
			w := Waiting{Count: uint64(info.NumAckPending)}
			if w.Count > 0 {
				w.Oldest = oldestUnacked(ctx, js, in.Topology, info)
			}
			return n, w, errors.Join(lost...)
		}
		batch, err := cons.Fetch(200, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return n, Waiting{}, fmt.Errorf("drain %s: %w", tenant, err)
		}
		for msg := range batch.Messages() {
			res, err := in.handle(ctx, tenant, msg, func() error { return msg.DoubleAck(ctx) },
				func() error { return confirmedTerm(ctx, js, msg) })
			if errors.Is(err, natsx.ErrDeadLetterUnwritable) {
				lost = append(lost, err) // settled by handle
			} else if err != nil {
				return n, Waiting{}, err
			}
			n++
			if handled != nil {
				handled(res)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return n, Waiting{}, fmt.Errorf("drain %s: %w", tenant, err)
		}
	}
	return n, Waiting{}, errors.Join(append(lost, ctx.Err())...)
}

// confirmedTerm terms msg and waits for the server to confirm it, as
// DoubleAck does for an ack (the jetstream API has no such term).
func confirmedTerm(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := js.Conn().RequestWithContext(ctx, msg.Reply(), []byte("+TERM"))
	return err
}

// Waiting counts what waits without folding it.
func (in *Ingester) Waiting(ctx context.Context, js jetstream.JetStream, tenant string) (Waiting, error) {
	cons, err := natsx.EnsureTenantConsumer(ctx, js, in.Topology, tenant)
	if err != nil {
		return Waiting{}, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return Waiting{}, fmt.Errorf("waiting %s: %w", tenant, err)
	}
	w := Waiting{Count: info.NumPending + uint64(info.NumAckPending)}
	if w.Count > 0 {
		w.Oldest = oldestUnacked(ctx, js, in.Topology, info)
	}
	return w, nil
}

// oldestUnacked is the storage time of the first event past the consumer's
// ack floor.
func oldestUnacked(ctx context.Context, js jetstream.JetStream, t natsx.Topology, info *jetstream.ConsumerInfo) time.Time {
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return time.Time{}
	}
	m, err := s.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(info.Config.FilterSubject))
	if err != nil {
		return time.Time{}
	}
	return m.Time
}
