package root_test

import (
	"os"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestMain installs an SDK tracer provider that exports nothing, as
// optoutctl's main does without OTEL_* variables: spans get real trace ids,
// which publish prints.
func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	os.Exit(m.Run())
}
