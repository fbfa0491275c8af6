package push

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/optout-sync/optout-sync/services/pusher/queue"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/ingest"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// folder folds one delivered event into the ledger and settles it, unless
// it is held (ingest.Ingester).
type folder interface {
	Handle(ctx context.Context, tenant string, msg jetstream.Msg, hold bool) (ingest.Result, error)
}

// intake is the replica's way in: it pulls every tenant's events from the
// shared consumer, folds each into the ledger and hands each person left
// dirty to its tenant's queue, with the event's ack when the event is
// held for the push (the ack travels with the work, as Benthos's AckFunc
// does). One goroutine reads, and each event is folded in a goroutine of
// its own, at most ingestConcurrency at once across every tenant. Folds
// commute and take milliseconds, never waiting for Salesforce, so one
// tenant's events cannot hold up another's for long.
type intake struct {
	js      jetstream.JetStream
	topo    natsx.Topology
	fold    folder
	lanes   func(ctx context.Context, subject string) *runner // the event's tenant's runner
	field   func(tenant string) string
	metrics *Metrics
	log     zerolog.Logger
	folds   chan struct{} // events being folded at once, all tenants
	// pulling is set once the shared consumer exists: the per-tenant
	// consumers it replaces may then be deleted.
	pulling atomic.Bool
}

// ingestConcurrency is the events folded at once by a replica, every
// tenant's together: a fold is a few ledger round trips, so this many keep
// the server busy in a burst, and a thousand trickling tenants need a
// handful.
const ingestConcurrency = 64

// pullBuffer is the most events a replica has been delivered and not yet
// handed to a fold (PullMaxMessages).
const pullBuffer = 1000

// run pulls until ctx ends, retrying after failures.
func (in *intake) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := in.pull(ctx); err != nil && ctx.Err() == nil {
			in.log.Warn().Err(err).Str("consumer", in.topo.PusherConsumer()).Msg("pulling events failed; retrying")
			sleep(ctx, time.Second)
		}
	}
}

// pull reads the shared consumer and hands each event to a fold.
func (in *intake) pull(ctx context.Context) error {
	cons, err := eventstream.EnsurePusherConsumer(ctx, in.js, in.topo)
	if err != nil {
		return err
	}
	in.pulling.Store(true)
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer))
	if err != nil {
		return fmt.Errorf("pull %s: %w", in.topo.PusherConsumer(), err)
	}
	// Stop, not Drain: messages still buffered are redelivered after AckWait.
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("pull %s: next: %w", in.topo.PusherConsumer(), err)
		}
		r := in.lanes(ctx, msg.Subject())
		r.arrivals.delivered()
		in.folds <- struct{}{}
		wg.Go(func() {
			defer func() { <-in.folds }()
			// A message in hand is settled even when shutdown starts.
			key, at := in.ingest(context.WithoutCancel(ctx), r, msg)
			handOff(r, key, at, func() { _ = msg.Ack() })
		})
	}
	return nil
}

// handOff gives r the person a fold left dirty (key "": none), with the
// event's ack when the fold held it.
func handOff(r *runner, key string, at ledger.Snapshot, ack queue.Ack) {
	// Folded before queued, so a Take that sees the key also sees whether
	// more are coming.
	r.arrivals.folded()
	if key == "" {
		return
	}
	if !at.Held {
		ack = nil // settled by the fold
	}
	at.Held = false // a batch is told Held by the queue, not by the hint
	r.q.Offer(key, at.Rev, at, ack)
}

// ingest folds one message into the ledger and returns the person's key
// and entry as folded when a write is due (at.Held: the message is left
// unacked, for the person's work to settle).
func (in *intake) ingest(ctx context.Context, r *runner, msg jetstream.Msg) (dirtyKey string, at ledger.Snapshot) {
	ctx, span := natsx.StartProcessSpan(ctx, msg, in.topo.PusherConsumer())
	defer span.End()
	span.SetAttributes(attribute.String("optout.tenant", r.tenant))
	received := time.Now()
	res, err := in.fold.Handle(ctx, r.tenant, msg, r.q.Room())
	switch {
	case errors.Is(err, deadletter.ErrDeadLetterUnwritable):
		// Settled (termed) by Handle: reported once, never redelivered.
		span.RecordError(err)
		span.SetStatus(codes.Error, "dead letter unwritable")
		r.log.Error().Ctx(ctx).Err(err).Str("subject", msg.Subject()).Uint64("stream_seq", streamSeq(msg)).
			Msg("invalid event could not be copied to the DLQ; it stays only in the events stream (termed, until its MaxAge)")
		in.metrics.deadLetterUnwritable(r.tenant, "invalid")
		return "", at
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, "ingest failed")
		r.log.Warn().Ctx(ctx).Err(err).Msg("ingest failed; the event will be redelivered")
		return "", at
	case res.Rejected != nil:
		span.SetStatus(codes.Error, string(event.CodeOf(res.Rejected)))
		span.SetAttributes(attribute.String("optout.outcome", "dead-lettered: "+string(event.CodeOf(res.Rejected))))
		r.log.Warn().Ctx(ctx).Str("code", string(event.CodeOf(res.Rejected))).Str("reason", oneLine(res.Rejected.Error())).Msg("invalid event sent to the DLQ")
		in.metrics.deadLettered(r.tenant, "invalid")
		return "", at
	}
	target := targetOf(in.field(r.tenant))
	in.metrics.stage(StageFold, target, time.Since(received))
	if res.Changed && res.At.Entry.LastEvent != nil {
		in.metrics.stage(StageArrive, target, received.Sub(res.At.Entry.LastEvent.OccurredAt))
	}
	if res.Clamped {
		in.metrics.clamped(r.tenant)
	}
	if res.Changed && res.At.Entry.State == optout.StateParked {
		in.metrics.parked(r.tenant)
	}
	span.SetAttributes(attribute.String("optout.outcome", "ingested: "+string(res.At.Entry.State)))
	if res.Dirty {
		return res.Key, res.At
	}
	return "", at
}

// streamSeq is msg's events stream sequence, 0 when unknown.
func streamSeq(msg jetstream.Msg) uint64 {
	if md, err := msg.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

// arrivals is how one tenant's events have been reaching the intake: the
// consumer is shared by every tenant, so its pending count says nothing
// about one; what the replica holds of the tenant, and how its events have
// been arriving, do.
type arrivals struct {
	// folding counts the tenant's events delivered and not yet folded.
	folding atomic.Int64
	// last is when the tenant's last event reached the intake, and gap the
	// time between it and the one before (unix ns, ns).
	last, gap atomic.Int64
}

// A tenant's events that reach the intake burstGap or less apart are a
// burst: more are likely on their way even when none is being folded (the
// next may still be in the pull buffer, behind other tenants' events, or
// in the next pull's answer), so a batch lingers for them up to burstFresh
// after the last. A trickle (10 a second is 100 ms apart) never lingers.
const (
	burstGap   = 10 * time.Millisecond
	burstFresh = 50 * time.Millisecond
)

// delivered records one of the tenant's events handed to a fold.
func (a *arrivals) delivered() {
	a.folding.Add(1)
	now := time.Now().UnixNano()
	a.gap.Store(now - a.last.Swap(now))
}

// folded records the end of one of the tenant's folds.
func (a *arrivals) folded() { a.folding.Add(-1) }

// moreComing says whether events of the tenant are on their way to the
// queue, so a batch that is not full yet should linger for them.
func (a *arrivals) moreComing() bool {
	if a.folding.Load() > 0 {
		return true
	}
	return time.Duration(a.gap.Load()) <= burstGap && time.Since(time.Unix(0, a.last.Load())) < burstFresh
}
