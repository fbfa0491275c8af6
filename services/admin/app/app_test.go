package app_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/admin/app"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// TestEveryVariableIsDocumented keeps README's configuration table true.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	l := config.FromMap(nil)
	app.Load(l)
	if err := l.Err(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
	for _, v := range l.Vars() {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s (%s)", v.Name, v.Help)
		}
	}
}

const token = "0123456789abcdef-token"

// start runs the admin service as its main wires it, in a namespace of its
// own, until the test ends; it returns the base URL of its port.
func start(t *testing.T, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc) // torn down at cleanup
	vars := map[string]string{
		"NATS_URL": natstest.URL(), "OPTOUT_NAMESPACE": topo.Namespace,
		"OPTOUT_NATS_STORAGE": "memory", "OPTOUT_NATS_REPLICAS": "1", "OPTOUT_ADMIN_ADDR": "127.0.0.1:0",
	}
	for k, v := range env {
		vars[k] = v
	}
	l := config.FromMap(vars)
	cfg := app.Load(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	if err := a.Listen(runCtx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		a.Close()
	})
	return "http://" + a.Admin.Addr()
}

func get(t *testing.T, url, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServesThePageBesideTheProbes: the admin service's one port serves the
// settings page to those who sign in, and the probes and metrics to anyone.
func TestServesThePageBesideTheProbes(t *testing.T) {
	t.Parallel()
	base := start(t, map[string]string{"OPTOUT_ADMIN_TOKEN": token})
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := get(t, base+path, ""); code != http.StatusOK {
			t.Errorf("%s: %d\n%s", path, code, body)
		}
	}
	if code, _ := get(t, base+"/admin/", ""); code != http.StatusUnauthorized {
		t.Errorf("/admin/ without credentials: %d, want 401", code)
	}
	if code, body := get(t, base+"/admin/", "Bearer "+token); code != http.StatusOK || !strings.Contains(body, "<h1>Tenants</h1>") {
		t.Errorf("/admin/ with the token: %d\n%s", code, body)
	}
}

// TestWithoutCredentialsThePageSaysHowToSetThemUp: an install whose admin
// Secret is missing still runs and is ready; the page refuses and explains.
func TestWithoutCredentialsThePageSaysHowToSetThemUp(t *testing.T) {
	t.Parallel()
	base := start(t, nil)
	if code, _ := get(t, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz: %d, want 200", code)
	}
	code, body := get(t, base+"/admin/", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "OPTOUT_ADMIN_USERS_FILE") {
		t.Errorf("/admin/ without configured credentials: %d\n%s", code, body)
	}
}
