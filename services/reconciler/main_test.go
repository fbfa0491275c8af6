package main

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/optout-sync/optout-sync/shared/config/configtest"
)

// TestNoSecretInOutput runs the real main once per configuration value that
// can hold a secret, each malformed, and scans what it prints (issue 20).
func TestNoSecretInOutput(t *testing.T) {
	if os.Getenv("RECONCILER_MAIN") == "1" {
		main()
		return
	}
	configtest.Scan(t, configtest.Cases(t, configtest.ClosedNATS(t)), func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNoSecretInOutput$")
		cmd.Env = []string{"RECONCILER_MAIN=1"}
		return cmd
	})
}
