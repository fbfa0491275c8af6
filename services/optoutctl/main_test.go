package main

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/optout-sync/optout-sync/shared/config/configtest"
)

// TestNoSecretInOutput runs the real optoutctl (tenant check, which reads
// every NATS and Salesforce setting) once per configuration value that can
// hold a secret, each malformed, and scans what it prints (issue 20).
func TestNoSecretInOutput(t *testing.T) {
	if os.Getenv("OPTOUTCTL_MAIN") == "1" {
		os.Args = []string{"optoutctl", "tenant", "check", "acme"}
		main()
		return
	}
	configtest.Scan(t, configtest.Cases(t, configtest.ClosedNATS(t)), func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNoSecretInOutput$")
		cmd.Env = []string{"OPTOUTCTL_MAIN=1"}
		return cmd
	})
}
