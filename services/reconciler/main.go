// Command reconciler makes Sales Connect and Salesforce agree once a day per
// tenant (and on request): see README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/app"
	"github.com/optout-sync/optout-sync/shared/config"
	"github.com/optout-sync/optout-sync/shared/logx"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/<service>/Dockerfile); every log line carries it.
var version = "dev"

// shutdownLimit is Kubernetes' default grace period: a run stops at its
// next step, leaves its checkpoint and releases its lease well within it.
const shutdownLimit = 30 * time.Second

func main() {
	l := config.FromEnv()
	cfg := app.Load(l)
	l.Exit(os.Stderr)
	log := logx.New("reconciler", os.Stderr).With().Str("version", version).Logger()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		time.Sleep(shutdownLimit)
		log.Error().Msg("shutdown took too long; exiting")
		os.Exit(1)
	}()
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("reconciler failed to start")
		os.Exit(1)
	}
	defer a.Close()
	if err := a.Run(ctx); err != nil {
		log.Error().Err(err).Msg("reconciler failed")
		os.Exit(1)
	}
}
