package app

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/config"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
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

// TestAdminPortServesProbesAndMetricsNotThePage: the settings page moved to
// services/admin; the pusher's admin port keeps /metrics and its probes.
func TestAdminPortServesProbesAndMetricsNotThePage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc) // torn down at cleanup
	l := config.FromMap(map[string]string{
		"NATS_URL": natstest.URL(), "OPTOUT_NAMESPACE": topo.Namespace, "OPTOUT_NATS_STORAGE": "memory",
		"OPTOUT_NATS_REPLICAS": "1", "OPTOUT_ADMIN_ADDR": "127.0.0.1:0", "OPTOUT_SF_CREDENTIALS_DIR": t.TempDir(),
	})
	cfg := Load(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	a, err := New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		a.Close()
	}()
	for a.Admin.Addr() == "127.0.0.1:0" { // bound by Run before it pushes
		time.Sleep(5 * time.Millisecond)
	}
	status := func(path string) int {
		resp, err := http.Get("http://" + a.Admin.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code := status(path); code != http.StatusOK {
			t.Errorf("%s: %d, want 200", path, code)
		}
	}
	if code := status("/admin/"); code != http.StatusNotFound {
		t.Errorf("/admin/ on the pusher: %d, want 404 (the page is served by services/admin)", code)
	}
}
