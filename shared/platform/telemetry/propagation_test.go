package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

func TestPublisherSpanIsParentOfConsumerSpan(t *testing.T) {
	tp := telemetry.NewForTest()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tracer := tp.Tracer("test")
	subject := "optout.v1.events.acme"

	// Publisher: the shape of nats.Header (map[string][]string).
	header := map[string][]string{"Nats-Msg-Id": {"evt-1"}}
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	pubCtx := baggage.ContextWithBaggage(context.Background(), bag)
	_, pubSpan := telemetry.StartSend(pubCtx, tracer, subject, header, telemetry.MessageID("evt-1"))
	pubSpan.End()

	require.Contains(t, header, "traceparent", "key must stay lower case")
	assert.NotContains(t, header, "Traceparent")
	assert.Contains(t, header, "baggage")
	assert.Equal(t, []string{"evt-1"}, header["Nats-Msg-Id"], "existing headers untouched")

	// Consumer: a fresh context, only the headers cross the wire.
	var buf bytes.Buffer
	logger := logx.New("pusher", &buf)
	ctx, consSpan := telemetry.StartProcess(context.Background(), tracer, subject, header,
		telemetry.ConsumerGroupName("pusher"), telemetry.NATSDeliveryCount(1))
	assert.Equal(t, "acme", baggage.FromContext(ctx).Member("tenant").Value())
	logger.Info().Ctx(ctx).Msg("processing opt-out")
	l := logx.Ctx(logger.WithContext(ctx))
	l.Info().Msg("via context logger")
	consSpan.End()

	spans := tp.Exporter.GetSpans()
	require.Len(t, spans, 2)
	pub, cons := spans[0], spans[1]
	assert.Equal(t, trace.SpanKindProducer, pub.SpanKind)
	assert.Equal(t, trace.SpanKindConsumer, cons.SpanKind)
	assert.Equal(t, pub.SpanContext.TraceID(), cons.SpanContext.TraceID())
	assert.Equal(t, pub.SpanContext.SpanID(), cons.Parent.SpanID())
	assert.True(t, cons.Parent.IsRemote())
	assert.Equal(t, "process "+subject, cons.Name)
	assert.Contains(t, cons.Attributes, attribute.String("messaging.system", "nats"))
	assert.Contains(t, cons.Attributes, attribute.String("messaging.operation.type", "process"))
	assert.Contains(t, cons.Attributes, attribute.String("messaging.destination.name", subject))
	assert.Contains(t, cons.Attributes, attribute.String("messaging.consumer.group.name", "pusher"))
	assert.Contains(t, cons.Attributes, attribute.Int64("messaging.nats.delivery_count", 1))
	assert.Contains(t, pub.Attributes, attribute.String("messaging.message.id", "evt-1"))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, line := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		assert.Equal(t, cons.SpanContext.TraceID().String(), rec["trace_id"])
		assert.Equal(t, cons.SpanContext.SpanID().String(), rec["span_id"])
		assert.Equal(t, "pusher", rec["service"])
		assert.NotEmpty(t, rec["time"])
	}
}

func TestHeaderCarrierIsCaseSensitive(t *testing.T) {
	h := telemetry.HeaderCarrier{}
	h.Set("traceparent", "a")
	assert.Equal(t, "a", h.Get("traceparent"))
	assert.Empty(t, h.Get("Traceparent"))
	assert.Equal(t, []string{"traceparent"}, h.Keys())

	// Extract without headers leaves the context alone; Inject into nil
	// must not panic.
	ctx := context.Background()
	assert.Equal(t, ctx, telemetry.Extract(ctx, nil))
	telemetry.Inject(ctx, nil)
}

func TestMessagingHelpers(t *testing.T) {
	assert.Equal(t, trace.SpanKindClient, telemetry.OpSettle.SpanKind())
	assert.Equal(t, trace.SpanKindClient, telemetry.OpReceive.SpanKind())
	assert.Equal(t, "fetch optout.v1.events.*", telemetry.MessagingSpanName("fetch", "optout.v1.events.*"))
	assert.Equal(t, attribute.Int("messaging.batch.message_count", 3), telemetry.BatchMessageCount(3))
	assert.Equal(t, attribute.Int("messaging.message.body.size", 42), telemetry.MessageBodySize(42))
	assert.Equal(t, attribute.String("messaging.operation.name", "ack"), telemetry.OperationName("ack"))
	assert.Equal(t, attribute.String("messaging.operation.type", "settle"), telemetry.OperationTypeAttr(telemetry.OpSettle))
}
