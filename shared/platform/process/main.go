package process

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
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
	// Every line the service writes passes the scrubber: no configured
	// secret is printed, whichever error quotes it.
	stderr := logx.NewScrubbingWriter(os.Stderr, config.SecretsIn(os.Environ()))
	telemetry.SetDiagnosticsOutput(stderr)
	l := config.FromEnv()
	cfg, hashKey := LoadConfig(l, load)
	l.Exit(stderr)
	log := logx.New(name, stderr).With().Str("version", version).Logger()
	ConfigureEmailHash(hashKey, log)

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

// LoadConfig reads every variable Main reads: the service's configuration
// and the email-hash key (tools/configdoc lists them from here).
func LoadConfig[C any](l *config.Loader, load func(*config.Loader) C) (C, []byte) {
	cfg := load(l)
	return cfg, logx.EmailHashKeyFromEnv(l)
}

// ConfigureEmailHash installs the per-install email-hash key. Without one
// the service still starts, on a random key of its own, and says so: pushing
// opt-outs is a legal duty that must not stop over a log setting, and
// unlinkable hashes leak nothing; they only stop a person's hashes from
// matching across replicas and restarts (logs and the ledger's emailHash).
func ConfigureEmailHash(key []byte, log zerolog.Logger) {
	if key == nil {
		log.Warn().Msg("no " + logx.EnvEmailHashKeyFile + " or " + logx.EnvEmailHashKey + ": email hashes use a random key of this process and match nothing from other replicas or restarts")
		return
	}
	logx.SetEmailHashKey(key)
}
