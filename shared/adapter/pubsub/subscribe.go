package pubsub

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/optout-sync/optout-sync/shared/adapter/pubsub/pubsubapi"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// Replay is where a subscription starts (spec §9.3).
type Replay int

const (
	// Latest starts at the tip: only events after the subscription.
	Latest Replay = iota
	// Earliest replays everything retained (72 h); it spends the org's
	// delivered-event allocation.
	Earliest
	// Custom resumes after a stored replay id.
	Custom
)

// MaxBatch caps what one subscription may have requested and not received
// (spec §9.3: 100 outstanding per stream).
const MaxBatch = 100

// SubscribeOptions describe a subscription.
type SubscribeOptions struct {
	Topic    string // /data/ContactChangeEvent, /data/ChangeEvents, /data/<Name>__chn
	Replay   Replay
	ReplayID []byte // for Custom: the last applied (or keepalive) replay id
	// Batch is how many events are requested at most at a time, 1..100
	// (default 100); more are asked for as the caller consumes them.
	Batch int
	// Fields are the record fields Event.Values keeps (default
	// DefaultFields); add the tenant's sales opt-out field.
	Fields []string
	// Watchdog, when set, ends a stream that sent nothing (no event, no
	// keepalive) for this long: streams sometimes go silent with no error
	// (spec §9.3), and keepalives come within 270 s, so about 300 s. Next
	// then returns a Retryable error with Code CodeStalled.
	Watchdog time.Duration
}

// CodeStalled is the Code of the error Next returns when the watchdog
// ended a silent stream.
const CodeStalled = "PUBSUB_STREAM_STALLED"

// Batch is one response of the stream.
type Batch struct {
	Events []Event
	// LatestReplayID is the position the stream reached: the last event's
	// id, or on a keepalive the bus's latest, possibly ahead of any event of
	// this topic. Storing it once the batch is applied resumes after it.
	LatestReplayID []byte
	// Keepalive marks a response without events (sent while events are
	// requested but none come, at least every 270 s).
	Keepalive bool
	// Pending is the server's count of events still requested.
	Pending int
}

// Subscription is one Subscribe stream with its flow control. Next is
// called by one goroutine; Close may be called from any.
type Subscription struct {
	c      *Client
	opts   SubscribeOptions
	batch  int
	ctx    context.Context
	cancel context.CancelFunc

	stream      grpc.BidiStreamingClient[pubsubapi.FetchRequest, pubsubapi.FetchResponse]
	streamStop  context.CancelFunc
	auth        salesforce.PubSubAuth
	outstanding int  // requested on this stream and not yet received
	answered    bool // this stream sent a response
	resume      []byte
	refreshed   bool // this Next call refreshed the session already
	idleReopens int  // clean closes in a row without a response in between
}

// Subscribe starts a subscription. The stream opens on the first Next,
// which also reports a refused session, topic or replay id. ctx bounds the
// whole subscription.
func (c *Client) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	if opts.Topic == "" {
		return nil, &salesforce.Error{Op: "subscribe", Code: salesforce.CodeInvalidArgument, Message: "no topic", Class: salesforce.PermanentTenant}
	}
	if opts.Replay == Custom && len(opts.ReplayID) == 0 {
		return nil, &salesforce.Error{Op: "subscribe", Code: salesforce.CodeInvalidArgument, Message: "Custom replay without a replay id", Class: salesforce.PermanentTenant}
	}
	b := opts.Batch
	if b <= 0 || b > MaxBatch {
		b = MaxBatch
	}
	if opts.Fields == nil {
		opts.Fields = DefaultFields
	}
	sctx, cancel := context.WithCancel(ctx)
	return &Subscription{c: c, opts: opts, batch: b, ctx: sctx, cancel: cancel}, nil
}

// Close ends the subscription.
func (s *Subscription) Close() { s.cancel() }

// open starts a stream: from the position of the last batch returned when
// there is one (CUSTOM, so nothing returned comes again and nothing after it
// is skipped), else from the subscription's replay option. The replay fields
// count only in the first request of a stream (spec §9.3).
func (s *Subscription) open() error {
	actx, a, err := s.c.withAuth(s.ctx)
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(actx)
	stream, err := s.c.api.Subscribe(sctx)
	if err != nil {
		stop()
		return rpcError("subscribe", err, nil)
	}
	first := &pubsubapi.FetchRequest{TopicName: s.opts.Topic, NumRequested: int32(s.batch)}
	switch {
	case s.resume != nil:
		first.ReplayPreset, first.ReplayId = pubsubapi.ReplayPreset_CUSTOM, s.resume
	case s.opts.Replay == Earliest:
		first.ReplayPreset = pubsubapi.ReplayPreset_EARLIEST
	case s.opts.Replay == Custom:
		first.ReplayPreset, first.ReplayId = pubsubapi.ReplayPreset_CUSTOM, s.opts.ReplayID
	default:
		first.ReplayPreset = pubsubapi.ReplayPreset_LATEST
	}
	// A failed Send means the stream already ended; Recv reports why.
	_ = stream.Send(first)
	s.stream, s.streamStop, s.auth = stream, stop, a
	s.outstanding, s.answered = s.batch, false
	return nil
}

func (s *Subscription) closeStream() {
	if s.streamStop != nil {
		s.streamStop()
	}
	s.stream, s.streamStop = nil, nil
}

// Next returns the next response: events (decoded) or a keepalive. It asks
// for more events as the caller consumes them: once no more than half the
// batch is still requested, it tops the request up to the batch (requests
// are additive), so at most Batch events are ever in flight.
//
// A stream the server closed because nothing was asked for is reopened from
// the last returned position; a refused session is refreshed once. Any
// other failure is a classified *salesforce.Error; the stream is then
// closed, and calling Next again resubscribes after the last batch
// returned (or from the replay option if none was), which for a Retryable
// failure is the way to resume. ReplayLost needs a new subscription.
func (s *Subscription) Next() (*Batch, error) {
	s.refreshed = false // one refresh per call, as the REST client per request
	for {
		if err := s.ctx.Err(); err != nil {
			s.closeStream()
			return nil, rpcError("subscribe", err, nil)
		}
		if s.stream == nil {
			if err := s.open(); err != nil {
				return nil, err
			}
		}
		if s.answered && s.outstanding <= s.batch/2 {
			n := s.batch - s.outstanding
			if err := s.stream.Send(&pubsubapi.FetchRequest{NumRequested: int32(n)}); err == nil {
				s.outstanding += n
			}
		}
		resp, stalled, err := s.recv()
		if stalled {
			s.closeStream()
			return nil, &salesforce.Error{Op: "subscribe", Code: CodeStalled, Class: salesforce.Retryable,
				Message: "no event or keepalive for " + s.opts.Watchdog.String() + "; the stream was ended"}
		}
		if err != nil {
			if retry, e := s.streamEnded(err); !retry {
				return nil, e
			}
			continue
		}
		s.answered, s.idleReopens = true, 0
		s.outstanding -= len(resp.GetEvents())
		b, err := s.batchOf(resp)
		if err != nil {
			// The events were taken off the stream but not returned: drop
			// the stream so the next call asks for them again.
			s.closeStream()
			return nil, err
		}
		if len(b.LatestReplayID) > 0 {
			s.resume = b.LatestReplayID
		}
		return b, nil
	}
}

// recv reads one response, ending the stream when the watchdog fires first.
func (s *Subscription) recv() (*pubsubapi.FetchResponse, bool, error) {
	if s.opts.Watchdog <= 0 {
		resp, err := s.stream.Recv()
		return resp, false, err
	}
	var fired atomic.Bool
	stop := s.streamStop
	t := time.AfterFunc(s.opts.Watchdog, func() { fired.Store(true); stop() })
	resp, err := s.stream.Recv()
	t.Stop()
	return resp, err != nil && fired.Load(), err
}

// streamEnded handles the end of a stream: whether to reopen, else the error.
func (s *Subscription) streamEnded(err error) (bool, error) {
	trailer := s.stream.Trailer()
	answered := s.answered
	s.closeStream()
	if errors.Is(err, io.EOF) && s.ctx.Err() == nil {
		// Closed by the server (OK): nothing was requested for 60 s (spec
		// §9.3). Reopen; twice in a row without a response is not that.
		s.idleReopens++
		if answered || s.idleReopens == 1 {
			return true, nil
		}
		return false, &salesforce.Error{Op: "subscribe", Code: salesforce.CodeTransport,
			Message: "the server closed the stream without a response", Class: salesforce.Retryable}
	}
	e := rpcError("subscribe", err, trailer)
	if e.Class == salesforce.Auth && !s.refreshed {
		s.refreshed = true
		s.c.sf.InvalidatePubSubAuth(s.auth)
		return true, nil
	}
	return false, e
}

// batchOf decodes a response's events with their writer schemas.
func (s *Subscription) batchOf(resp *pubsubapi.FetchResponse) (*Batch, error) {
	b := &Batch{LatestReplayID: resp.GetLatestReplayId(), Pending: int(resp.GetPendingNumRequested()),
		Keepalive: len(resp.GetEvents()) == 0}
	for _, ce := range resp.GetEvents() {
		pe := ce.GetEvent()
		ev := Event{ReplayID: ce.GetReplayId(), ID: pe.GetId(), SchemaID: pe.GetSchemaId()}
		sc, err := s.c.GetSchema(s.ctx, pe.GetSchemaId())
		if err != nil {
			var se *salesforce.Error
			if !errors.As(err, &se) || se.Code != salesforce.CodeUndecodableEvent {
				return nil, err
			}
			ev.Err = err
		} else if ev.Header, ev.Values, err = decode(sc, pe.GetPayload(), s.opts.Fields); err != nil {
			ev.Err = &salesforce.Error{Op: "decode event", Code: salesforce.CodeUndecodableEvent,
				Message: "payload does not decode with schema " + pe.GetSchemaId(), Class: salesforce.PermanentRecord, Err: err}
		}
		b.Events = append(b.Events, ev)
	}
	if len(b.LatestReplayID) == 0 && len(b.Events) > 0 {
		b.LatestReplayID = b.Events[len(b.Events)-1].ReplayID
	}
	return b, nil
}
