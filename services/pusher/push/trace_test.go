package push_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

var tel = telemetry.NewForTest()

func TestMain(m *testing.M) {
	otel.SetTracerProvider(tel.TracerProvider)
	os.Exit(m.Run())
}

func TestOneOptOutIsOneTraceFromPublisherToSalesforce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	c := s.seed("acme", "Contact")

	ctx, root := otel.Tracer("test-publisher").Start(s.Ctx, "user clicks unsubscribe")
	s.Ctx = ctx
	s.publish("acme", "trace-1", sfID(c))
	root.End()
	traceID := root.SpanContext().TraceID()
	s.Eventually("applied", 10*time.Second, func() bool { return s.Settled("acme") && s.optedOut("acme", c, std) })

	var spans tracetest.SpanStubs
	s.Eventually("spans exported", 5*time.Second, func() bool {
		spans = nil
		for _, sp := range tel.Exporter.GetSpans() {
			if sp.SpanContext.TraceID() == traceID {
				spans = append(spans, sp)
			}
		}
		return find(spans, "push batch") != nil && hasKind(spans, trace.SpanKindClient)
	})
	send := find(spans, "publish ")
	process := find(spans, "process ")
	batch := find(spans, "push batch")
	if send == nil || process == nil || batch == nil {
		t.Fatalf("trace lacks a send, process or batch span: %v", names(spans))
	}
	if send.SpanKind != trace.SpanKindProducer || process.SpanKind != trace.SpanKindConsumer {
		t.Errorf("kinds: send %v, process %v", send.SpanKind, process.SpanKind)
	}
	if process.Parent.SpanID() != send.SpanContext.SpanID() {
		t.Error("the consumer's span is not the child of the publisher's span")
	}
	linked := false
	for _, l := range batch.Links {
		linked = linked || l.SpanContext.SpanID() == process.SpanContext.SpanID()
	}
	if !linked || batch.Parent.SpanID() != process.SpanContext.SpanID() {
		t.Error("the Salesforce batch is not the child of the record's span, linking it")
	}
	for _, sp := range spans {
		for _, a := range sp.Attributes {
			if strings.Contains(a.Value.String(), "@example.com") || strings.Contains(a.Value.String(), c) {
				t.Errorf("span %q attribute %s leaks %q", sp.Name, a.Key, a.Value.String())
			}
		}
	}
}

func find(spans tracetest.SpanStubs, prefix string) *tracetest.SpanStub {
	for i := range spans {
		if strings.HasPrefix(spans[i].Name, prefix) {
			return &spans[i]
		}
	}
	return nil
}

func hasKind(spans tracetest.SpanStubs, k trace.SpanKind) bool {
	for _, s := range spans {
		if s.SpanKind == k {
			return true
		}
	}
	return false
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
