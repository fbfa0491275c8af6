// Command optoutctl lets operators see and steer optout-sync without reading
// logs: tenants and their Salesforce readiness, test opt-outs, a person's
// opt-out history, and dead letters.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/root"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Nothing optoutctl prints shows a configured secret, whichever error
	// quotes it (issue 20).
	secrets := config.SecretsIn(os.Environ())
	stdout, stderr := logx.NewScrubbingWriter(os.Stdout, secrets), logx.NewScrubbingWriter(os.Stderr, secrets)
	telemetry.SetDiagnosticsOutput(stderr)
	// Traces: ids always (publish prints the trace id), export when OTEL_* asks.
	tel, err := telemetry.Setup(ctx, "optoutctl")
	if err != nil {
		_, _ = io.WriteString(stderr, "optoutctl: telemetry: "+err.Error()+"; fix the OTEL_* variables\n")
		os.Exit(cli.ExitUsage)
	}
	inv := &cli.Invocation{
		Stdout: stdout, Stderr: stderr, Stdin: os.Stdin, Env: environ(),
		// Asked of the real files: the scrubbing writers hide them.
		StdoutTerminal: term.IsTerminal(int(os.Stdout.Fd())), StderrTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}
	code := cli.Main(ctx, root.Command(inv), os.Args[1:], inv)
	flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = tel.Shutdown(flush)
	cancel()
	stop()
	os.Exit(code)
}

func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
