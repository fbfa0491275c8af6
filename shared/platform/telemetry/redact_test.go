package telemetry_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

func TestSpanRedaction(t *testing.T) {
	tp := telemetry.NewForTest()
	tracer := tp.Tracer("test")

	secretText := "push for jane.doe@example.com failed: Authorization: Bearer abc.DEF-123 client_secret=s3cr3t"
	_, span := tracer.Start(context.Background(), "push", trace.WithLinks(trace.Link{
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: [16]byte{1}, SpanID: [8]byte{1}}),
		Attributes:  []attribute.KeyValue{attribute.String("person", "jane.doe@example.com")},
	}))
	span.SetAttributes(
		attribute.String("person.email", "Jane.Doe@Example.com"),
		attribute.String("http.request.header.authorization", "Bearer abc.DEF-123"),
		attribute.String("detail", secretText),
		attribute.StringSlice("recipients", []string{"ok", "jane.doe@example.com"}),
		attribute.Int("records", 3),
	)
	span.RecordError(errors.New(secretText))
	span.SetStatus(codes.Error, secretText)
	span.End()

	spans := tp.Exporter.GetSpans()
	require.Len(t, spans, 1)
	got := spans[0]
	hash := logx.HashEmail("jane.doe@example.com")

	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range got.Attributes {
		attrs[kv.Key] = kv.Value
	}
	assert.Equal(t, hash, attrs["person.email"].AsString())
	assert.Equal(t, "Bearer [REDACTED]", attrs["http.request.header.authorization"].AsString())
	assert.Equal(t, "push for "+hash+" failed: Authorization: [REDACTED] client_secret=[REDACTED]", attrs["detail"].AsString())
	assert.Equal(t, []string{"ok", hash}, attrs["recipients"].AsStringSlice())
	assert.Equal(t, int64(3), attrs["records"].AsInt64())

	require.Len(t, got.Events, 1)
	for _, kv := range got.Events[0].Attributes {
		if kv.Key == "exception.message" {
			assert.Equal(t, attrs["detail"].AsString(), kv.Value.AsString())
		}
	}
	assert.Equal(t, attrs["detail"].AsString(), got.Status.Description)
	require.Len(t, got.Links, 1)
	assert.Equal(t, hash, got.Links[0].Attributes[0].Value.AsString())

	for _, s := range []string{"jane.doe", "abc.DEF-123", "s3cr3t"} {
		assert.NotContains(t, spanText(got.Attributes, got.Events[0].Attributes, got.Links[0].Attributes)+got.Status.Description, s)
	}

	// The recorder sees the raw span: redaction copies, it never mutates
	// the snapshot shared with other processors.
	ended := tp.Recorder.Ended()
	require.Len(t, ended, 1)
	assert.Contains(t, ended[0].Attributes(), attribute.String("person.email", "Jane.Doe@Example.com"))
}

func TestRedactSpanPassesCleanSpanThrough(t *testing.T) {
	tp := telemetry.NewForTest()
	_, span := tp.Tracer("test").Start(context.Background(), "clean", trace.WithAttributes(attribute.String("k", "v")))
	span.End()
	ended := tp.Recorder.Ended()
	require.Len(t, ended, 1)
	assert.Same(t, ended[0], telemetry.RedactSpan(ended[0]))
}

func spanText(sets ...[]attribute.KeyValue) string {
	var s string
	for _, set := range sets {
		for _, kv := range set {
			s += kv.Value.String() + " "
		}
	}
	return s
}
