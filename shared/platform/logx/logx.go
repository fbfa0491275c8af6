// Package logx builds the zerolog loggers every optout-sync service uses:
// JSON lines (pretty console output on a terminal), a level taken from
// LOG_LEVEL, trace_id/span_id taken from the event's context, and automatic
// redaction of emails and secrets on every line.
package logx

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// Field names shared by all services so log queries work across them.
const (
	FieldService = "service"
	FieldTenant  = "tenant"
	FieldTraceID = "trace_id"
	FieldSpanID  = "span_id"
)

// EnvLevel is the environment variable holding the minimum log level
// (trace, debug, info, warn, error, fatal, panic, disabled).
const EnvLevel = "LOG_LEVEL"

// Declared for the configuration reference: New reads it, not a Loader.
var _ = config.Declare(config.Var{Name: EnvLevel, Default: "info",
	Allowed: "trace, debug, info, warn, error, fatal, panic, disabled",
	Help:    "minimum log level; an unknown value means info, so a typo never silences a service"})

// New returns a logger writing to w with the service and time fields, the
// trace hook and redaction. Output is JSON, or zerolog's ConsoleWriter when w
// is a terminal (developer runs); the level comes from LOG_LEVEL (default
// info).
func New(service string, w io.Writer) zerolog.Logger {
	var out io.Writer = w
	if isTerminal(w) {
		out = zerolog.ConsoleWriter{Out: w}
	}
	// Redaction sits before the ConsoleWriter so it sees the JSON line
	// either way.
	return zerolog.New(NewRedactingWriter(out)).
		Level(LevelFromEnv()).
		Hook(TraceHook{}).
		With().
		Timestamp().
		Str(FieldService, service).
		Logger()
}

// LevelFromEnv parses LOG_LEVEL; an empty or unknown value yields info so a
// typo never silences a service.
func LevelFromEnv() zerolog.Level {
	v := strings.TrimSpace(os.Getenv(EnvLevel))
	if v == "" {
		return zerolog.InfoLevel
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(v))
	if err != nil || lvl == zerolog.NoLevel {
		return zerolog.InfoLevel
	}
	return lvl
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// TraceHook adds trace_id and span_id from the event's context, set with
// logger.Info().Ctx(ctx) or logger.With().Ctx(ctx), so a log line can be
// joined to its trace in Jaeger.
type TraceHook struct{}

// Run implements zerolog.Hook.
func (TraceHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	ctx := e.GetCtx()
	if ctx == nil {
		return
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	e.Str(FieldTraceID, sc.TraceID().String()).Str(FieldSpanID, sc.SpanID().String())
}

// WithTenant returns a child logger that tags every line with the tenant id.
func WithTenant(l zerolog.Logger, tenant string) zerolog.Logger {
	return l.With().Str(FieldTenant, tenant).Logger()
}

// Ctx returns the logger stored in ctx (zerolog.Ctx, which falls back to the
// default/disabled logger) bound to ctx, so every event it writes carries the
// trace ids of the span active in ctx without calling .Ctx(ctx) each time.
func Ctx(ctx context.Context) zerolog.Logger {
	return zerolog.Ctx(ctx).With().Ctx(ctx).Logger()
}
