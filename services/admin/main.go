// Command admin serves the tenant settings page (services/admin/page): the
// "Sync with Salesforce" switch, the field choice, a live prerequisite check,
// backlog, dead letters and the nightly runs, per tenant.
package main

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/admin/app"
	"github.com/optout-sync/optout-sync/shared/platform/process"
)

// version is stamped at build time: -ldflags "-X main.version=..."
// (deploy/images/<service>/Dockerfile); every log line carries it.
var version = "dev"

func main() {
	process.Main("admin", version, app.Load, func(ctx context.Context, cfg app.Config, log zerolog.Logger) (process.Service, error) {
		return app.New(ctx, cfg, log)
	})
}
