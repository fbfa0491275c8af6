package natsx

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

// TraceID returns the W3C trace id carried in a message's headers, or "" when
// there is none (tracing disabled at the publisher). Operators paste it into
// Jaeger to follow one opt-out from publisher to Salesforce.
func TraceID(h map[string][]string) string {
	sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
	if !sc.TraceID().IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
