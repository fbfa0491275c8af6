package natsx

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/telemetry"
)

const tracerName = "github.com/optout-sync/optout-sync/shared/natsx"

// Publisher sends messages to JetStream with a PRODUCER span, W3C trace
// context and the Nats-Msg-Id that lets the stream drop replays.
type Publisher struct {
	JS       jetstream.JetStream
	Topology Topology
}

// Publish sends msg with msgID as Nats-Msg-Id (when non-empty) inside a
// PRODUCER span whose context travels in the message headers.
func (p Publisher) Publish(ctx context.Context, msg *nats.Msg, msgID string) (*jetstream.PubAck, error) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	ctx, span := telemetry.StartSend(ctx, otel.Tracer(tracerName), DestinationTemplate(msg.Subject), msg.Header,
		telemetry.MessageID(msgID), telemetry.MessageBodySize(len(msg.Data)))
	defer span.End()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := p.JS.PublishMsg(ctx, msg, opts...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return nil, fmt.Errorf("publish to %s: %w", msg.Subject, err)
	}
	span.SetAttributes(attribute.Bool("messaging.nats.duplicate", ack.Duplicate),
		attribute.Int64("messaging.nats.stream_sequence", int64(ack.Sequence)))
	return ack, nil
}

// StartProcessSpan starts the CONSUMER span of one delivered message as the
// child of the publisher's span (semantic conventions allow the parent form
// for single messages; batches link instead).
func StartProcessSpan(ctx context.Context, msg jetstream.Msg, consumer string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		telemetry.ConsumerGroupName(consumer),
		telemetry.MessageBodySize(len(msg.Data())),
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		attrs = append(attrs, telemetry.MessageID(id))
	}
	if md, err := msg.Metadata(); err == nil {
		attrs = append(attrs, telemetry.NATSDeliveryCount(md.NumDelivered),
			attribute.Int64("messaging.nats.stream_sequence", int64(md.Sequence.Stream)))
	}
	return telemetry.StartProcess(ctx, otel.Tracer(tracerName), DestinationTemplate(msg.Subject()), msg.Headers(), attrs...)
}

// DestinationTemplate replaces the tenant token of a subject with {tenant},
// keeping span names and metric labels low-cardinality.
func DestinationTemplate(subject string) string {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return subject
	}
	return subject[:i] + ".{tenant}"
}
