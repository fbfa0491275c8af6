package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// newTraceExporter returns the OTLP span exporter selected by the
// environment, or nil when traces are not exported. Exporters are built with
// no options so they read endpoint, headers, TLS, timeout and compression
// from the standard variables; neither protocol dials at construction (gRPC
// connects lazily), so Setup never blocks on a collector.
func newTraceExporter(ctx context.Context) (sdktrace.SpanExporter, string, error) {
	ok, err := exportWanted(envTracesExporter, envEndpoint, envTracesEndpoint)
	if err != nil || !ok {
		return nil, "", err
	}
	proto, err := protocol(envTracesProtocol)
	if err != nil {
		return nil, "", err
	}
	var exp sdktrace.SpanExporter
	switch proto {
	case ProtocolHTTPProtobuf:
		exp, err = otlptracehttp.New(ctx)
	default:
		exp, err = otlptracegrpc.New(ctx)
	}
	if err != nil {
		return nil, "", fmt.Errorf("create OTLP %s trace exporter: %w", proto, err)
	}
	return exp, "otlp/" + proto, nil
}

// newMetricExporter is newTraceExporter for metrics.
func newMetricExporter(ctx context.Context) (sdkmetric.Exporter, string, error) {
	ok, err := exportWanted(envMetricsExporter, envEndpoint, envMetricsEndpoint)
	if err != nil || !ok {
		return nil, "", err
	}
	proto, err := protocol(envMetricsProtocol)
	if err != nil {
		return nil, "", err
	}
	var exp sdkmetric.Exporter
	switch proto {
	case ProtocolHTTPProtobuf:
		exp, err = otlpmetrichttp.New(ctx)
	default:
		exp, err = otlpmetricgrpc.New(ctx)
	}
	if err != nil {
		return nil, "", fmt.Errorf("create OTLP %s metric exporter: %w", proto, err)
	}
	return exp, "otlp/" + proto, nil
}
