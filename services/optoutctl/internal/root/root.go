// Package root assembles optoutctl's command tree. A new command group is
// one more AddCommand.
package root

import (
	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/dlqcmd"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/personcmd"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/publishcmd"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/reconcilecmd"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/tenantcmd"
)

// Command returns a fresh tree for one invocation (flag values live in it
// and in inv, so each run builds its own).
func Command(inv *cli.Invocation) *cobra.Command {
	root := &cobra.Command{
		Use:   "optoutctl",
		Short: "operate optout-sync: tenants, test opt-outs, people's opt-out history, dead letters, reconcile runs",
		Long:  help,
	}
	root.AddCommand(
		tenantcmd.Command(inv),
		publishcmd.Command(inv),
		personcmd.Command(inv),
		dlqcmd.Command(inv),
		reconcilecmd.Command(inv),
	)
	return cli.Setup(root, inv)
}

const help = `Output is a table by default; -o json prints JSON for scripts (and -o csv
prints tables as CSV). Errors are one line on stderr saying what to do.

Exit codes:
  0  ok
  1  failed (NATS or Salesforce unreachable, a write refused, ...)
  2  usage: wrong command, flag or argument, or input the contract refuses
  3  not found: no such tenant, person or dead letter
  4  prerequisite not met: NATS not provisioned, a tenant's Salesforce setup
     failing (tenant check), a dead letter still invalid (dlq replay), a
     reconcile run refused (sync disabled, busy) or stopped by its guard or
     API budget

Environment (the services' variables; flags override):
  NATS_URL (--server), NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE,
  NATS_CREDS_FILE (--creds), NATS_TLS_CA/CERT/KEY, NATS_CONNECT_TIMEOUT,
  OPTOUT_NAMESPACE (--namespace), OPTOUT_SF_CREDENTIALS_DIR (--sf-credentials-dir)
  and SF_<TENANT>_* for Salesforce credentials, OTEL_* for traces.

Shell completion (commands, flags, tenant names): optoutctl completion bash|zsh|fish.`
