// Package ingest folds opt-out events into the ledger: decode, fold into
// the person's entry (compare-and-set), ack. From the ack on the ledger, not
// the events stream, holds the event, so nothing ages out while a tenant
// waits. The pusher ingests continuously, and may hold an event that left
// its person dirty unacked until it has pushed the person (Result.At.Held);
// the reconciler drains what is still waiting before a run, through the
// same code.
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
	"github.com/optout-sync/optout-sync/shared/deadletter"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/logx"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// DeadLetters writes the copy of an event that can never be applied.
type DeadLetters interface {
	Write(ctx context.Context, l deadletter.Letter) error
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
	Key string
	// At is the entry as the fold left it, with its revision and dirty
	// marker's: where the push's write may start from.
	At       ledger.Snapshot
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
// written is termed, not redelivered, and the error (a
// deadletter.ErrDeadLetterUnwritable) is for the caller to report.
//
// With hold, an event that leaves its person dirty is folded without a
// dirty marker and left unacked (Result.At.Held): the caller acks it once a
// write has left the person clean, or after ledger.MarkHeld; if the caller
// dies first, the redelivery folds it again (a no-op) and it is held anew.
func (in *Ingester) Handle(ctx context.Context, tenant string, msg jetstream.Msg, hold bool) (Result, error) {
	res, letter, err := in.fold(ctx, tenant, msg, hold)
	switch {
	case letter != nil:
		if werr := in.DLQ.Write(ctx, *letter); werr != nil {
			if errors.Is(werr, deadletter.ErrDeadLetterUnwritable) {
				// Every attempt failed: never loop on it. Term stops the
				// redeliveries; the events stream (Limits retention) keeps
				// the event, at the sequence the error names.
				_ = msg.Term()
				return res, fmt.Errorf("invalid event (%s) at %s sequence %d was termed and is kept only in the events stream: %w",
					event.CodeOf(res.Rejected), msg.Subject(), letter.Seq, werr)
			}
			_ = msg.NakWithDelay(time.Second)
			return Result{}, werr
		}
	case err != nil:
		_ = msg.NakWithDelay(time.Second)
		return Result{}, err
	}
	if res.At.Held {
		// Left unacked: the caller settles it, and owes the person's push.
		return res, nil
	}
	// The effect is durable; a lost ack is an idempotent redelivery.
	_ = msg.Ack()
	return res, nil
}

// fold decodes msg and folds it into the ledger without settling it. An
// invalid event comes back as Result.Rejected with the dead letter to
// write.
func (in *Ingester) fold(ctx context.Context, tenant string, msg jetstream.Msg, hold bool) (Result, *deadletter.Letter, error) {
	md, mdErr := msg.Metadata()
	// The canonical subject: a namespace prefixes the stored one.
	ev, err := event.Decode(event.Subject(tenant), msg.Data(), msg.Headers(), in.now())
	if err != nil {
		letter := &deadletter.Letter{Tenant: tenant, Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
			Cause: err, Code: string(event.CodeOf(err)), Class: "invalid"}
		if mdErr == nil {
			letter.Seq = md.Sequence.Stream
		}
		return Result{Rejected: err}, letter, nil
	}
	input := Input(ev, msg.Headers(), trace.SpanContextFromContext(ctx), ctx)
	if mdErr == nil {
		input.StoredAt = md.Timestamp
	}
	field := in.Field(tenant)
	ingestFn := in.Ledger.Ingest
	if hold {
		ingestFn = in.Ledger.IngestHeld
	}
	res, err := ingestFn(ctx, tenant, input, field)
	if err != nil {
		return Result{}, nil, fmt.Errorf("ingest %s: %w", ev.GetEventId(), err)
	}
	dirty := res.Entry.Dirty(field)
	return Result{Key: res.Key, At: ledger.Snapshot{Entry: res.Entry, Rev: res.Revision, Mark: res.Mark, Held: hold && dirty},
		Dirty: dirty, Clamped: res.Clamped, Changed: res.Changed}, nil, nil
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
		Replay: h.Get(deadletter.HeaderReplayedFrom) != "",
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

// Drained is what Drain did.
type Drained struct {
	// Folded: events the drain folded first (no one had).
	Folded int
	// AlreadyFolded: events past the pusher's ack floor that the ledger
	// already had (a pusher folded them and has not acked every event
	// before them yet): folded again, which changed nothing.
	AlreadyFolded int
	// Invalid: events that can never be folded, left to the pusher,
	// which dead-letters them once (as it acks them on its consumer).
	Invalid int
}

// drainBatch is how many events a drain fetches at once.
const drainBatch = 200

// Drain folds every event of tenant the pusher has not settled: from its
// consumer's ack floor (every event before it is folded) to the events
// stream's last event when the drain starts, through an ordered consumer
// of its own on the tenant's subject. The pusher's consumer serves every
// tenant and cannot hand out one tenant's events, so the drain reads the
// stream and leaves the pusher's consumer alone: the pusher folds the same
// events later, which changes nothing (Ledger.Ingest ignores an event
// the entry has seen). Invalid events are the pusher's to dead-letter.
func (in *Ingester) Drain(ctx context.Context, js jetstream.JetStream, tenant string, handled func(Result)) (Drained, error) {
	var d Drained
	s, err := js.Stream(ctx, in.Topology.EventsStream())
	if err != nil {
		return d, fmt.Errorf("drain %s: events stream: %w", tenant, err)
	}
	last := s.CachedInfo().State.LastSeq
	first, err := eventstream.FirstUnsettled(ctx, s, in.Topology, tenant)
	if err != nil {
		return d, fmt.Errorf("drain %s: %w", tenant, err)
	}
	if first == nil || first.Seq > last {
		return d, nil
	}
	subject := in.Topology.EventsSubject(tenant)
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    first.Seq,
		// Deleted when the drain ends; by the server if that fails.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return d, fmt.Errorf("drain %s: consumer: %w", tenant, err)
	}
	defer natsx.DeleteOrdered(ctx, js, in.Topology.EventsStream(), c)
	next := first.Seq // the first event not folded yet
	for ctx.Err() == nil {
		batch, err := c.Fetch(drainBatch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return d, fmt.Errorf("drain %s: %w", tenant, err)
		}
		done, got := false, 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return d, fmt.Errorf("drain %s: %w", tenant, err)
			}
			if done || md.Sequence.Stream > last {
				done = true // stored after the drain began: the pusher's
				continue
			}
			res, _, err := in.fold(ctx, tenant, msg, false)
			if err != nil {
				return d, fmt.Errorf("drain %s: %w", tenant, err)
			}
			switch {
			case res.Rejected != nil:
				d.Invalid++
			case res.Changed:
				d.Folded++
			default:
				d.AlreadyFolded++
			}
			if handled != nil {
				handled(res)
			}
			next = md.Sequence.Stream + 1
			done = md.Sequence.Stream >= last || md.NumPending == 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return d, fmt.Errorf("drain %s: %w", tenant, err)
		}
		if done {
			return d, nil
		}
		if got == 0 {
			// Nothing came: done unless an event is still there to fold.
			m, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Sequence > last) {
				return d, nil
			}
			if err != nil {
				return d, fmt.Errorf("drain %s: %w", tenant, err)
			}
		}
	}
	return d, fmt.Errorf("drain %s: %w", tenant, ctx.Err())
}

// Waiting counts what waits without folding it: the tenant's backlog on
// the pusher's consumer (eventstream.TenantBacklog, which the admin page and
// optoutctl show too), and when its oldest event was stored.
func (in *Ingester) Waiting(ctx context.Context, js jetstream.JetStream, tenant string) (Waiting, error) {
	b, err := eventstream.TenantBacklog(ctx, js, in.Topology, tenant)
	if err != nil {
		return Waiting{}, fmt.Errorf("waiting %s: %w", tenant, err)
	}
	w := Waiting{Count: b.Total()}
	if b.Oldest != nil {
		w.Oldest = b.Oldest.Received
	}
	return w, nil
}
