package telemetry

import (
	"io"
	stdlog "log"

	"github.com/go-logr/stdr"
	"go.opentelemetry.io/otel"
)

// SetDiagnosticsOutput sends the OpenTelemetry SDK's own messages (such as
// "parse url" for a malformed OTEL_EXPORTER_OTLP_ENDPOINT, which quotes the
// URL, credentials and all) and the standard logger through w, which the
// services wrap with the secret scrubber. Otherwise they go to os.Stderr
// unfiltered.
func SetDiagnosticsOutput(w io.Writer) {
	stdlog.SetOutput(w)
	otel.SetLogger(stdr.New(stdlog.New(w, "", stdlog.LstdFlags|stdlog.Lshortfile)))
}
