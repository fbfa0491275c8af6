package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// Propagator is the W3C TraceContext + Baggage propagator used on NATS and
// HTTP. Inject and Extract use it directly rather than the global one so the
// NATS layer propagates context even in processes (and tests) that never
// called Setup.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{},
	propagation.Baggage{},
)

// HeaderCarrier adapts a map[string][]string (the shape of nats.Header) to
// propagation.TextMapCarrier. Unlike propagation.HeaderCarrier (http.Header)
// it does not canonicalise keys: nats.Header Get/Set are case-sensitive, and
// other NATS clients (Java, .NET instrumentation) expect lower-case
// "traceparent", which canonicalisation would turn into "Traceparent".
type HeaderCarrier map[string][]string

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value stored under exactly key, or "".
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values stored under exactly key.
func (h HeaderCarrier) Set(key, value string) {
	h[key] = []string{value}
}

// Keys lists the keys present in the carrier.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context and baggage of ctx into h (for example
// msg.Header of a message built with nats.NewMsg). A nil h is ignored because
// a nil map cannot be written and the caller's message would have no headers
// to carry them anyway.
func Inject(ctx context.Context, h map[string][]string) {
	if h == nil {
		return
	}
	Propagator.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx enriched with the remote span context and baggage found
// in h; with no usable headers ctx is returned unchanged.
func Extract(ctx context.Context, h map[string][]string) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}
