package root_test

import (
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
)

// TestUsageHelpAndExitCodes pins what scripts rely on: help on stdout with
// exit 0, usage errors with 2, an unreachable NATS with 1, an unprovisioned
// namespace with 4, every error on one line of stderr.
func TestUsageHelpAndExitCodes(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.Run().Expect(t, 0).Golden(t, "help")
	s.Run("dlq", "replay", "--help").Expect(t, 0).Golden(t, "help_dlq_replay")
	s.Run("tenant").Expect(t, 2)
	s.Run("tenant", "remove", "acme").Expect(t, 2).Golden(t, "usage_unknown_command")
	s.Run("tenant", "show").Expect(t, 2).Golden(t, "usage_missing_argument")
	s.Run("tenant", "list", "--colour").Expect(t, 2).Golden(t, "usage_unknown_flag")
	s.Run("-o", "yaml", "tenant", "list").Expect(t, 2).Golden(t, "usage_bad_output")
	// Cobra's additions keep exit 2 and one line: a close command is
	// suggested, a long flag with one dash is named as such.
	s.Run("tenants", "list").Expect(t, 2).Golden(t, "usage_unknown_command_suggested")
	s.Run("tenant", "list", "-server", "nats://127.0.0.1:4222").Expect(t, 2).Golden(t, "usage_long_flag_one_dash")
	s.Run("dlq", "list", "--limit", "many").Expect(t, 2).Golden(t, "usage_bad_flag_value")
	s.Run("dlq", "list", "--limit").Expect(t, 2).Golden(t, "usage_flag_without_value")
	// A command's own flag comes after the command's name (global ones go
	// anywhere, as below).
	s.Run("--no-check", "tenant", "show", "acme").Expect(t, 2).Golden(t, "usage_command_flag_before_command")
	// Flags go before or after the command's arguments.
	before := s.Run("-o", "json", "tenant", "list").Expect(t, 0)
	after := s.Run("tenant", "list", "--output=json").Expect(t, 0)
	if before.Stdout != after.Stdout || !strings.HasPrefix(before.Stdout, "[") {
		t.Errorf("-o json before and after the command differ:\n%s\n%s", before.Stdout, after.Stdout)
	}

	s.Run("--server", "nats://127.0.0.1:1", "tenant", "list").Expect(t, 1).Golden(t, "error_nats_unreachable")
	s.Run("tenant", "list", "--namespace", "nowhere").Expect(t, 4).Golden(t, "error_not_provisioned")

	for _, r := range []testkit.Result{s.Run("tenant", "show"), s.Run("--server", "nats://127.0.0.1:1", "tenant", "list"), s.Run("tenants"), s.Run("tenant", "list", "--colour")} {
		if lines := strings.Count(r.Stderr, "\n"); lines != 1 || !strings.HasPrefix(r.Stderr, "optoutctl: ") {
			t.Errorf("stderr is not one line:\n%s", r.Stderr)
		}
	}
}
