// Command pusher writes each opt-out event to Salesforce within seconds.
package main

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/pusher/app"
	"github.com/optout-sync/optout-sync/shared/platform/process"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/Dockerfile); every log line carries it.
var version = "dev"

func main() {
	process.Main("pusher", version, app.Load, func(ctx context.Context, cfg app.Config, log zerolog.Logger) (process.Service, error) {
		return app.New(ctx, cfg, log)
	})
}
