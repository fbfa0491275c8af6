package main

import (
	"os"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/platform/config/configtest"
)

// TestBadConfigExitsWithOneLine runs the real main with invalid variables:
// one line each, and the short token is not echoed.
func TestBadConfigExitsWithOneLine(t *testing.T) {
	if os.Getenv("ADMIN_MAIN") == "1" {
		main()
		return
	}
	got := configtest.BadConfig(t, "TestBadConfigExitsWithOneLine", "ADMIN_MAIN", "OPTOUT_ADMIN_TOKEN=short-secret", "OPTOUT_ADMIN_ADDR=nowhere")
	if strings.Contains(got, "short-secret") {
		t.Fatalf("the token is printed:\n%s", got)
	}
	for _, want := range []string{`config: OPTOUT_ADMIN_ADDR="nowhere" is invalid`, `config: OPTOUT_ADMIN_TOKEN="[REDACTED]" is invalid: want at least 16 characters`} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 2 {
		t.Errorf("%d lines, want one per bad variable:\n%s", n, got)
	}
}
