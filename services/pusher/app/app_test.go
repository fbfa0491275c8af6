package app

import (
	"os"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// TestEveryVariableIsDocumented keeps README's configuration table true.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	l := config.FromMap(nil)
	Load(l)
	if err := l.Err(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
	for _, v := range l.Vars() {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s (%s)", v.Name, v.Help)
		}
	}
}
