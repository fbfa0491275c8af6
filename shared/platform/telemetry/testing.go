package telemetry

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// TestProviders are Providers whose spans and metrics stay in memory, for
// tests in any package. They are not installed as globals, so tests using
// them can run in parallel; pass Providers.Tracer(...) to the code under
// test.
type TestProviders struct {
	*Providers
	// Exporter receives every ended span synchronously, after redaction:
	// exactly what would leave the process. Shutdown empties it, so assert
	// before shutting down.
	Exporter *tracetest.InMemoryExporter
	// Recorder sees spans as the code produced them (before redaction),
	// including spans that have started but not ended.
	Recorder *tracetest.SpanRecorder
	// MetricReader collects on demand (MetricReader.Collect) for metric
	// assertions without scraping Registry.
	MetricReader *sdkmetric.ManualReader
}

// NewForTest returns in-memory providers. It panics on the (static)
// Prometheus exporter setup error because it is meant for tests only.
func NewForTest() *TestProviders {
	res := resource.NewSchemaless(semconv.ServiceName("test"))
	exp := tracetest.NewInMemoryExporter()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(rec),
		// Syncer so a span is in Exporter as soon as End returns.
		sdktrace.WithSpanProcessor(NewRedactingSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp))),
	)

	reg := prometheus.NewRegistry()
	promExp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		panic(fmt.Sprintf("telemetry: prometheus exporter for test: %v", err))
	}
	manual := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(res),
		sdkmetric.WithReader(promExp),
		sdkmetric.WithReader(manual),
	)

	p := &Providers{
		TracerProvider: tp,
		MeterProvider:  mp,
		Registry:       reg,
		Resource:       res,
		TracesExport:   "memory",
		MetricsExport:  "memory",
	}
	p.shutdowns = append(p.shutdowns, tp.Shutdown, mp.Shutdown)
	return &TestProviders{Providers: p, Exporter: exp, Recorder: rec, MetricReader: manual}
}
