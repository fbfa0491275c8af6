package main

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/optout-sync/optout-sync/shared/platform/config/configtest"
)

// TestBadConfigExitsWithOneLine runs the real main with an invalid variable.
func TestBadConfigExitsWithOneLine(t *testing.T) {
	if os.Getenv("PUSHER_MAIN") == "1" {
		main()
		return
	}
	got := configtest.BadConfig(t, "TestBadConfigExitsWithOneLine", "PUSHER_MAIN", "OPTOUT_WORKERS=lots", "OPTOUT_LINGER=soon")
	want := `config: OPTOUT_WORKERS="lots" is invalid: want an integer from 1 to 256
config: OPTOUT_LINGER="soon" is invalid: want a duration such as 30s or 5m, from 0s to 5s`
	if got != want {
		t.Fatalf("stderr =\n%s\nwant\n%s", got, want)
	}
}

// TestNoSecretInOutput runs the real main once per configuration value that
// can hold a secret, each malformed, and scans what it prints (issue 20,
// finding 4: a NATS_URL with a bad port printed its password).
func TestNoSecretInOutput(t *testing.T) {
	if os.Getenv("PUSHER_MAIN") == "1" {
		main()
		return
	}
	configtest.Scan(t, configtest.Cases(t, configtest.ClosedNATS(t)), func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNoSecretInOutput$")
		cmd.Env = []string{"PUSHER_MAIN=1"}
		return cmd
	})
}
