package root_test

import (
	"os"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// TestMain installs an SDK tracer provider that exports nothing, as
// optoutctl's main does without OTEL_* variables: spans get real trace ids,
// which publish prints.
func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	// The golden files hold the ledger's email hashes: a fixed key keeps
	// them stable (unset, every process hashes with a random key).
	logx.SetEmailHashKey([]byte("optoutctl-golden-files-email-hash-key"))
	os.Exit(m.Run())
}
