package process

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/config"
	"github.com/optout-sync/optout-sync/shared/logx"
)

// ShutdownLimit is Kubernetes' default grace period: services settle their
// work in flight well within it, and are stopped hard past it.
const ShutdownLimit = 30 * time.Second

// Service is a wired replica: Run works until ctx ends, Close releases.
type Service interface {
	Run(ctx context.Context) error
	Close()
}

// Main is a service's main: it loads and validates the configuration (exit 2
// with one line per bad variable), logs JSON with the service name and
// version, and runs until SIGTERM or Ctrl-C (exit 1 on failure).
func Main[C any](name, version string, load func(*config.Loader) C, start func(context.Context, C, zerolog.Logger) (Service, error)) {
	l := config.FromEnv()
	cfg := load(l)
	l.Exit(os.Stderr)
	log := logx.New(name, os.Stderr).With().Str("version", version).Logger()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		time.Sleep(ShutdownLimit)
		log.Error().Msg("shutdown took too long; exiting")
		os.Exit(1)
	}()
	svc, err := start(ctx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg(name + " failed to start")
		os.Exit(1)
	}
	err = svc.Run(ctx)
	svc.Close()
	if err != nil {
		log.Error().Err(err).Msg(name + " failed")
		os.Exit(1)
	}
}
