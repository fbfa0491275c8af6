// Command sfsandbox serves the Salesforce REST API emulator (package sandbox)
// for local development and tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/telemetry"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/<service>/Dockerfile); every log line carries it.
var version = "dev"

func main() {
	listen := flag.String("listen", ":8085", "listen address")
	orgsPath := flag.String("orgs", "orgs.yaml", "orgs configuration (YAML)")
	flag.Parse()
	log := zerolog.New(os.Stderr).With().Timestamp().Str("service", "sfsandbox").Str("version", version).Logger()
	if err := run(*listen, *orgsPath, log); err != nil {
		log.Error().Err(err).Msg("sfsandbox stopped")
		os.Exit(1)
	}
}

func run(listen, orgsPath string, log zerolog.Logger) error {
	cfg, err := sandbox.LoadConfig(orgsPath)
	if err != nil {
		return err
	}
	cfg.OnCall = func(org string, c sandbox.Call) {
		log.Info().Str("org", org).Str("route", c.Route).Str("method", c.Method).Str("path", c.Path).
			Int("status", c.Status).Int("records", c.Records).Str("fault", c.FaultID).Msg("call")
	}
	sb, err := sandbox.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	host := ln.Addr().String()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		host = fmt.Sprintf("localhost:%d", tcp.Port)
	}
	// Printed on purpose: this is a dev emulator and newcomers need these to
	// point services at it. Its credentials protect nothing real.
	for _, name := range sb.OrgNames() {
		oc := sb.Org(name).Config()
		fmt.Printf("org %-10s token URL http://%s/orgs/%s/services/oauth2/token client_id=%s client_secret=%s\n",
			name, host, name, oc.ClientID, oc.ClientSecret)
	}
	tel, err := telemetry.Setup(context.Background(), "sfsandbox")
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
	}()
	// Server spans join the caller's trace (traceparent), so one opt-out is
	// one trace down to the emulated Salesforce. Names carry only the method:
	// paths hold record ids.
	handler := otelhttp.NewHandler(sb, "sfsandbox",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "sfsandbox " + r.Method }))
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info().Str("listen", ln.Addr().String()).Int("orgs", len(sb.OrgNames())).Msg("sfsandbox listening")
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
