// Package telemetry sets up OpenTelemetry tracing and metrics for optout-sync
// services from the standard OTEL_* environment variables only, and carries
// trace context across NATS headers.
//
// With no OTEL_* variables set nothing is exported and no connection is
// made, yet spans still get real trace and span ids so logs can carry
// trace_id and context still propagates to downstream services.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// Standard OpenTelemetry environment variables read by Setup. The OTLP
// exporters read the rest themselves (headers, TLS, timeout, compression).
const (
	envSDKDisabled     = "OTEL_SDK_DISABLED"
	envTracesExporter  = "OTEL_TRACES_EXPORTER"
	envMetricsExporter = "OTEL_METRICS_EXPORTER"
	envEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	envProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envMetricsProtocol = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
)

// Declared for the configuration reference: Setup reads them, not a Loader.
var _ = []string{
	config.Declare(config.Var{Name: envEndpoint, Help: "OTLP endpoint of traces and metrics; unset (and no exporter asked for) = nothing exported, no connection, no cost"}),
	config.Declare(config.Var{Name: envTracesEndpoint, Help: "OTLP endpoint of traces only"}),
	config.Declare(config.Var{Name: envMetricsEndpoint, Help: "OTLP endpoint of metrics only (Prometheus /metrics on the admin port is always served)"}),
	config.Declare(config.Var{Name: envProtocol, Default: ProtocolGRPC, Allowed: ProtocolGRPC + " or " + ProtocolHTTPProtobuf, Help: "OTLP protocol (" + envTracesProtocol + " and " + envMetricsProtocol + " per signal)"}),
	config.Declare(config.Var{Name: envTracesExporter, Allowed: "otlp or none", Help: "otlp exports traces to the exporter's default endpoint; none exports none"}),
	config.Declare(config.Var{Name: envMetricsExporter, Allowed: "otlp, prometheus or none", Help: "otlp exports metrics over OTLP too; none exports none"}),
	config.Declare(config.Var{Name: envSDKDisabled, Default: "false", Allowed: "true or false", Help: "true installs no-op providers (no spans, no OTel metrics)"}),
	config.Declare(config.Var{Name: "OTEL_SERVICE_NAME", Help: "renames the service in traces (also service.name in OTEL_RESOURCE_ATTRIBUTES); the OTLP exporters read the other standard OTEL_EXPORTER_OTLP_* variables (headers, TLS, timeout)"}),
}

// OTLP protocols supported by the Go exporters.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Providers holds the tracer and meter providers of a process and the
// Prometheus registry its /metrics endpoint serves.
type Providers struct {
	// TracerProvider is an SDK provider, or a no-op one when
	// OTEL_SDK_DISABLED=true.
	TracerProvider trace.TracerProvider
	// MeterProvider is an SDK provider, or a no-op one when
	// OTEL_SDK_DISABLED=true.
	MeterProvider metric.MeterProvider
	// Registry receives the OTel metrics (through the Prometheus exporter)
	// plus Go runtime and process collectors; serve it on /metrics.
	Registry *prometheus.Registry
	// Resource describes the service; nil when the SDK is disabled.
	Resource *resource.Resource

	// TracesExport and MetricsExport name what leaves the process
	// ("none", "otlp/grpc", "otlp/http/protobuf") for a startup log line.
	TracesExport  string
	MetricsExport string

	shutdowns []func(context.Context) error
}

// Tracer returns a named tracer from the provider.
func (p *Providers) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return p.TracerProvider.Tracer(name, opts...)
}

// Meter returns a named meter from the provider.
func (p *Providers) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return p.MeterProvider.Meter(name, opts...)
}

// Shutdown flushes pending spans and metrics and stops the exporters. Call
// it once on exit with a bounded context; later calls are no-ops.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	// Traces first: their exporters may record metrics while flushing.
	for _, fn := range p.shutdowns {
		if err := fn(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.shutdowns = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports buffered spans now (the SDK tracer provider only);
// useful before a short-lived command exits or in integration tests.
func (p *Providers) ForceFlush(ctx context.Context) error {
	if tp, ok := p.TracerProvider.(*sdktrace.TracerProvider); ok {
		if err := tp.ForceFlush(ctx); err != nil {
			return fmt.Errorf("flush spans: %w", err)
		}
	}
	if mp, ok := p.MeterProvider.(*sdkmetric.MeterProvider); ok {
		if err := mp.ForceFlush(ctx); err != nil {
			return fmt.Errorf("flush metrics: %w", err)
		}
	}
	return nil
}

// Setup builds the providers for serviceName from the OTEL_* environment,
// installs them and the W3C TraceContext+Baggage propagator as the globals,
// and returns them. serviceName is the default service.name;
// OTEL_SERVICE_NAME or service.name in OTEL_RESOURCE_ATTRIBUTES override it.
//
// Traces go to OTLP (OTEL_EXPORTER_OTLP_PROTOCOL / ..._TRACES_PROTOCOL: grpc
// by default, or http/protobuf) when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or OTEL_TRACES_EXPORTER=otlp
// asks for it explicitly (exporter default endpoint); OTEL_TRACES_EXPORTER=
// none turns them off. Metrics always feed Providers.Registry, and also go
// to OTLP on the same rules with OTEL_METRICS_EXPORTER.
// OTEL_SDK_DISABLED=true installs no-op providers.
func Setup(ctx context.Context, serviceName string) (*Providers, error) {
	otel.SetTextMapPropagator(Propagator)

	p := &Providers{Registry: prometheus.NewRegistry(), TracesExport: "none", MetricsExport: "none"}
	if envBool(envSDKDisabled) {
		p.TracerProvider = tracenoop.NewTracerProvider()
		p.MeterProvider = metricnoop.NewMeterProvider()
		otel.SetTracerProvider(p.TracerProvider)
		otel.SetMeterProvider(p.MeterProvider)
		return p, nil
	}

	res, err := newResource(ctx, serviceName)
	if err != nil {
		return nil, err
	}
	p.Resource = res

	// Undo what was built so far if a later step fails.
	fail := func(err error) (*Providers, error) {
		_ = p.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exp, kind, err := newTraceExporter(ctx)
	if err != nil {
		return fail(err)
	}
	if exp != nil {
		// Redaction is in front of the batcher so no exporter ever sees a
		// raw email or secret.
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(NewRedactingSpanProcessor(sdktrace.NewBatchSpanProcessor(exp))))
		p.TracesExport = kind
	}
	// Without an exporter the provider has no span processor: spans get
	// ids and propagate, and are dropped when they end.
	tp := sdktrace.NewTracerProvider(tpOpts...)
	p.TracerProvider = tp
	p.shutdowns = append(p.shutdowns, func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracer provider: %w", err)
		}
		return nil
	})

	promExp, err := otelprom.New(otelprom.WithRegisterer(p.Registry))
	if err != nil {
		return fail(fmt.Errorf("create prometheus exporter: %w", err))
	}
	if err := p.Registry.Register(collectors.NewGoCollector()); err != nil {
		return fail(fmt.Errorf("register go collector: %w", err))
	}
	if err := p.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fail(fmt.Errorf("register process collector: %w", err))
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	mexp, mkind, err := newMetricExporter(ctx)
	if err != nil {
		return fail(err)
	}
	if mexp != nil {
		// The periodic reader reads OTEL_METRIC_EXPORT_INTERVAL/TIMEOUT.
		mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(mexp)))
		p.MetricsExport = mkind
	}
	mp := sdkmetric.NewMeterProvider(mpOpts...)
	p.MeterProvider = mp
	p.shutdowns = append(p.shutdowns, func(ctx context.Context) error {
		if err := mp.Shutdown(ctx); err != nil {
			return fmt.Errorf("meter provider: %w", err)
		}
		return nil
	})

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	return p, nil
}

// newResource merges resource.Default (SDK, host-independent defaults and the
// OTEL_RESOURCE_ATTRIBUTES/OTEL_SERVICE_NAME detectors) with serviceName,
// then lets the environment win again so an operator can rename a service
// without a rebuild.
func newResource(ctx context.Context, serviceName string) (*resource.Resource, error) {
	// Schemaless so the merge never fails on a schema URL mismatch between
	// the SDK's semconv version and ours.
	svc := resource.NewSchemaless(semconv.ServiceName(serviceName))
	res, err := resource.Merge(resource.Default(), svc)
	if err != nil {
		return nil, fmt.Errorf("merge service resource: %w", err)
	}
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("read OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	res, err = resource.Merge(res, env)
	if err != nil {
		return nil, fmt.Errorf("merge environment resource: %w", err)
	}
	return res, nil
}

// exportWanted applies the OTEL_{TRACES,METRICS}_EXPORTER selection: "none"
// disables, "otlp" forces OTLP on, unset means OTLP only if an endpoint is
// configured. "prometheus" is accepted for metrics because the Prometheus
// reader is always present.
func exportWanted(selectorEnv string, endpointEnvs ...string) (bool, error) {
	sel := strings.TrimSpace(strings.ToLower(os.Getenv(selectorEnv)))
	endpointSet := false
	for _, e := range endpointEnvs {
		if strings.TrimSpace(os.Getenv(e)) != "" {
			endpointSet = true
		}
	}
	if sel == "" {
		return endpointSet, nil
	}
	wantOTLP := false
	for _, v := range strings.Split(sel, ",") {
		switch strings.TrimSpace(v) {
		case "none":
			// The spec says none wins over anything else listed.
			return false, nil
		case "otlp":
			wantOTLP = true
		case "prometheus":
			if selectorEnv != envMetricsExporter {
				return false, fmt.Errorf("%s=%q: unsupported exporter", selectorEnv, sel)
			}
		default:
			return false, fmt.Errorf("%s=%q: unsupported exporter (use otlp or none)", selectorEnv, sel)
		}
	}
	return wantOTLP, nil
}

// protocol returns the OTLP protocol from the signal-specific variable, then
// the general one, defaulting to grpc.
func protocol(signalEnv string) (string, error) {
	v := strings.TrimSpace(os.Getenv(signalEnv))
	name := signalEnv
	if v == "" {
		v = strings.TrimSpace(os.Getenv(envProtocol))
		name = envProtocol
	}
	switch strings.ToLower(v) {
	case "", ProtocolGRPC:
		return ProtocolGRPC, nil
	case ProtocolHTTPProtobuf:
		return ProtocolHTTPProtobuf, nil
	default:
		return "", fmt.Errorf("%s=%q: unsupported OTLP protocol (use grpc or http/protobuf)", name, v)
	}
}

func envBool(name string) bool {
	return strings.EqualFold(strings.TrimSpace(os.Getenv(name)), "true")
}
