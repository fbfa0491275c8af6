package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// The emulator sets up its own tracing instead of using shared/platform/telemetry, so
// it depends on nothing of the project's (the client it checks must not
// share code with it). Traces only, from the standard OTEL_* variables: its
// server spans join the caller's trace and go to the same collector.

// traceExport says what OTEL_* asks for: "" (no export), "grpc" or
// "http/protobuf".
func traceExport(getenv func(string) string) (string, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return "", nil
	}
	want := getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	switch sel := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); sel {
	case "":
	case "none":
		return "", nil
	case "otlp":
		want = true
	default:
		return "", fmt.Errorf("OTEL_TRACES_EXPORTER=%q: unsupported (use otlp or none)", sel)
	}
	if !want {
		return "", nil
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto = strings.TrimSpace(proto); proto {
	case "", "grpc":
		return "grpc", nil
	case "http/protobuf":
		return proto, nil
	}
	return "", fmt.Errorf("OTLP protocol %q: unsupported (use grpc or http/protobuf)", proto)
}

// setupTracing installs the W3C propagator and a tracer provider; the
// returned function flushes and stops it. Without export, spans still get
// ids so the trace context passes through.
func setupTracing(ctx context.Context) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	proto, err := traceExport(os.Getenv)
	if err != nil {
		return nil, err
	}
	// Later options win: the environment (OTEL_SERVICE_NAME,
	// OTEL_RESOURCE_ATTRIBUTES) may rename the service.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName("sfsandbox")), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if proto != "" {
		// No options: the exporters read endpoint, headers and TLS from
		// OTEL_EXPORTER_OTLP_*, and neither dials here.
		var exp sdktrace.SpanExporter
		if proto == "http/protobuf" {
			exp, err = otlptracehttp.New(ctx)
		} else {
			exp, err = otlptracegrpc.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("OTLP %s trace exporter: %w", proto, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}
