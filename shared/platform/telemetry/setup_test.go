package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// clearOTelEnv unsets every OTEL_* variable for the test (t.Setenv restores
// them afterwards), so the developer's shell cannot leak into the result.
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
}

// listenCounter binds addr if it is free and counts accepted connections;
// it returns nil when the port is in use (the check is best effort).
func listenCounter(t *testing.T, addr string) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Logf("cannot watch %s: %v", addr, err)
		return nil
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return &n
}

func TestSetupWithoutEnvExportsNothing(t *testing.T) {
	clearOTelEnv(t)
	// The OTLP default endpoints: if anything tried to export, it would
	// dial one of these.
	watched := []*atomic.Int32{listenCounter(t, "127.0.0.1:4317"), listenCounter(t, "127.0.0.1:4318")}

	ctx := context.Background()
	p, err := Setup(ctx, "pusher")
	require.NoError(t, err)
	assert.Equal(t, "none", p.TracesExport)
	assert.Equal(t, "none", p.MetricsExport)

	tctx, span := p.Tracer("test").Start(ctx, "work")
	sc := span.SpanContext()
	assert.True(t, sc.IsValid(), "spans need real ids so logs can carry trace_id")
	span.End()

	// The global propagator is W3C, so context still flows downstream.
	h := map[string][]string{}
	otel.GetTextMapPropagator().Inject(tctx, HeaderCarrier(h))
	assert.Contains(t, h["traceparent"][0], sc.TraceID().String())

	counter, err := p.Meter("test").Int64Counter("work_done")
	require.NoError(t, err)
	counter.Add(ctx, 1)

	require.NoError(t, p.ForceFlush(ctx))
	require.NoError(t, p.Shutdown(ctx))
	time.Sleep(50 * time.Millisecond)
	for _, n := range watched {
		if n != nil {
			assert.Zero(t, n.Load(), "no connection expected")
		}
	}
	assert.Equal(t, "pusher", serviceName(p))
}

func serviceName(p *Providers) string {
	v, _ := p.Resource.Set().Value("service.name")
	return v.AsString()
}

// otlpReceiver is a minimal OTLP/HTTP collector.
type otlpReceiver struct {
	mu      sync.Mutex
	traces  []*colltrace.ExportTraceServiceRequest
	metrics []*collmetric.ExportMetricsServiceRequest
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var resp proto.Message
	r.mu.Lock()
	switch req.URL.Path {
	case "/v1/traces":
		m := &colltrace.ExportTraceServiceRequest{}
		err = proto.Unmarshal(raw, m)
		r.traces = append(r.traces, m)
		resp = &colltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		m := &collmetric.ExportMetricsServiceRequest{}
		err = proto.Unmarshal(raw, m)
		r.metrics = append(r.metrics, m)
		resp = &collmetric.ExportMetricsServiceResponse{}
	default:
		r.mu.Unlock()
		http.NotFound(w, req)
		return
	}
	r.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = io.Copy(w, bytes.NewReader(out))
}

func TestSetupExportsToOTLPHTTP(t *testing.T) {
	clearOTelEnv(t)
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "pusher-from-env")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")

	ctx := context.Background()
	p, err := Setup(ctx, "pusher")
	require.NoError(t, err)
	assert.Equal(t, "otlp/http/protobuf", p.TracesExport)
	assert.Equal(t, "otlp/http/protobuf", p.MetricsExport)

	_, span := p.Tracer("test").Start(ctx, "push batch",
		trace.WithAttributes(attribute.String("person", "jane.doe@example.com")))
	traceID := span.SpanContext().TraceID()
	span.End()
	counter, err := p.Meter("test").Int64Counter("optout_pushed")
	require.NoError(t, err)
	counter.Add(ctx, 2)

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(sctx))

	recv.mu.Lock()
	defer recv.mu.Unlock()
	require.NotEmpty(t, recv.traces)
	var found bool
	for _, req := range recv.traces {
		for _, rs := range req.ResourceSpans {
			attrs := map[string]string{}
			for _, kv := range rs.Resource.Attributes {
				attrs[kv.Key] = kv.Value.GetStringValue()
			}
			assert.Equal(t, "pusher-from-env", attrs["service.name"])
			assert.Equal(t, "test", attrs["deployment.environment.name"])
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					if s.Name != "push batch" {
						continue
					}
					found = true
					assert.Equal(t, traceID[:], s.TraceId)
					require.Len(t, s.Attributes, 1)
					assert.Regexp(t, `^email:[0-9a-f]{12}$`, s.Attributes[0].Value.GetStringValue())
				}
			}
		}
	}
	assert.True(t, found, "span must reach the OTLP receiver")

	require.NotEmpty(t, recv.metrics, "metrics are flushed on shutdown")
	var names []string
	for _, req := range recv.metrics {
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					names = append(names, m.Name)
				}
			}
		}
	}
	assert.Contains(t, names, "optout_pushed")
}

func TestSetupSelectors(t *testing.T) {
	ctx := context.Background()

	t.Run("traces none, metrics still exported", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv("OTEL_TRACES_EXPORTER", "none")
		p, err := Setup(ctx, "svc")
		require.NoError(t, err)
		assert.Equal(t, "none", p.TracesExport)
		assert.Equal(t, "otlp/grpc", p.MetricsExport)
		// Shutdown flushes to an unreachable endpoint: bound it.
		sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_ = p.Shutdown(sctx)
	})

	t.Run("traces-only endpoint", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
		p, err := Setup(ctx, "svc")
		require.NoError(t, err)
		assert.Equal(t, "otlp/http/protobuf", p.TracesExport)
		assert.Equal(t, "none", p.MetricsExport)
		require.NoError(t, p.Shutdown(ctx), "no spans, nothing to send")
	})

	t.Run("sdk disabled", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv("OTEL_SDK_DISABLED", "true")
		p, err := Setup(ctx, "svc")
		require.NoError(t, err)
		assert.Equal(t, "none", p.TracesExport)
		_, isSDK := p.TracerProvider.(*sdktrace.TracerProvider)
		assert.False(t, isSDK)
		require.NoError(t, p.Shutdown(ctx))
	})

	t.Run("bad protocol", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
		_, err := Setup(ctx, "svc")
		require.ErrorContains(t, err, "OTEL_EXPORTER_OTLP_PROTOCOL")
	})

	t.Run("unknown exporter", func(t *testing.T) {
		clearOTelEnv(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
		_, err := Setup(ctx, "svc")
		require.ErrorContains(t, err, "OTEL_TRACES_EXPORTER")
	})
}
