// Command reconciler makes Sales Connect and Salesforce agree once a day per
// tenant (and on request): see README.md.
package main

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/reconciler/app"
	"github.com/optout-sync/optout-sync/shared/platform/process"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/Dockerfile); every log line carries it.
var version = "dev"

func main() {
	process.Main("reconciler", version, app.Load, func(ctx context.Context, cfg app.Config, log zerolog.Logger) (process.Service, error) {
		return app.New(ctx, cfg, log)
	})
}
