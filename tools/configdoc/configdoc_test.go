package main

import (
	"os"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// TestCommittedReferenceIsCurrent is make docs-check inside make test: the
// committed docs/configuration.md is what the loaders read today.
func TestCommittedReferenceIsCurrent(t *testing.T) {
	have, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != string(want) {
		t.Fatal("docs/configuration.md is stale: run make docs and commit")
	}
	for _, name := range []string{"NATS_URL", "OPTOUT_WORKERS", "OPTOUT_REDIS_URL", "OPTOUT_EMAIL_HASH_KEY_FILE", "LOG_LEVEL", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if !strings.Contains(string(want), "| `"+name+"` |") {
			t.Errorf("the reference has no row for %s", name)
		}
	}
}

func TestRenderListsSharedVariablesOnceAndLabelsDifferentMeanings(t *testing.T) {
	svcs := []Service{
		{Name: "Pusher", Dir: "services/pusher", Vars: []config.Var{
			{Name: "NATS_URL", Default: "nats://x", Help: "server"},
			{Name: "ADDR", Default: ":9090", Help: "admin <port>"},
			{Name: "WORKERS", Default: "128", Allowed: "integer from 1 to 256", Help: "calls | replica"},
		}},
		{Name: "Reconciler", Dir: "services/reconciler", Vars: []config.Var{
			{Name: "NATS_URL", Default: "nats://x", Help: "server"},
			{Name: "ADDR", Default: ":9090", Help: "probes"},
			{Name: "WORKERS", Default: "8", Help: "ledger writes"},
		}},
	}
	doc := string(Render(svcs, []config.Var{{Name: "LOG_LEVEL", Default: "info"}}))
	for _, want := range []string{
		"| `NATS_URL` | `nats://x` |  | server |",
		"| `ADDR` | `:9090` |  | pusher: admin &lt;port&gt;; reconciler: probes |",
		// Same name, different defaults: each service lists its own.
		"| `WORKERS` | `128` | integer from 1 to 256 | calls \\| replica |",
		"| `WORKERS` | `8` |  | ledger writes |",
		"| `LOG_LEVEL` | `info` |  |  |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("missing %q in\n%s", want, doc)
		}
	}
	if n := strings.Count(doc, "| `NATS_URL` |"); n != 1 {
		t.Errorf("NATS_URL listed %d times; want once", n)
	}
}
