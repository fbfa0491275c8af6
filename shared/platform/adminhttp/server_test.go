package adminhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/shared/platform/adminhttp"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestAdminServer(t *testing.T) {
	// Setup reads OTEL_*; make sure none leak in so nothing is exported.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
	ctx := context.Background()
	p, err := telemetry.Setup(ctx, "adminhttp-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	counter, err := p.Meter("test").Int64Counter("optout_events_processed")
	require.NoError(t, err)
	counter.Add(ctx, 3)

	srv := adminhttp.New("127.0.0.1:0", p.Registry, adminhttp.Options{CheckTimeout: 200 * time.Millisecond})
	var natsDown atomic.Bool
	natsDown.Store(true)
	srv.AddCheck("nats", func(context.Context) error {
		if natsDown.Load() {
			return errors.New("dial nats://user:password=pw@nats:4222 refused")
		}
		return nil
	})
	srv.AddCheck("redis", func(context.Context) error { return nil })
	srv.HandleFunc("GET /admin/", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "admin page") })

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	require.NoError(t, srv.Start(runCtx))
	base := "http://" + srv.Addr()

	code, _ := get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code)

	code, body := get(t, base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	var ready struct {
		Status string            `json:"status"`
		Failed []string          `json:"failed"`
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &ready), body)
	assert.Equal(t, "unavailable", ready.Status)
	assert.Equal(t, []string{"nats"}, ready.Failed)
	assert.Equal(t, "ok", ready.Checks["redis"])
	assert.Contains(t, ready.Checks["nats"], "refused")
	assert.NotContains(t, body, "=pw", "check errors are redacted")

	natsDown.Store(false)
	code, body = get(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, code, body)

	code, body = get(t, base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "optout_events_processed_total")
	assert.Contains(t, body, `service_name="adminhttp-test"`, "target_info carries the resource")
	assert.Contains(t, body, "go_goroutines")

	code, body = get(t, base+"/admin/")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "admin page", body)

	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(sctx))
	_, err = http.Get(base + "/healthz")
	assert.Error(t, err, "server stopped")
}

func TestReadyzCheckTimeoutAndPanic(t *testing.T) {
	srv := adminhttp.New("127.0.0.1:0", nil, adminhttp.Options{CheckTimeout: 50 * time.Millisecond})
	srv.AddCheck("hung", func(context.Context) error { select {} })
	srv.AddCheck("buggy", func(context.Context) error { panic("boom") })
	require.NoError(t, srv.Start(t.Context()))
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	start := time.Now()
	code, body := get(t, "http://"+srv.Addr()+"/readyz")
	assert.Less(t, time.Since(start), time.Second)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, `"failed":["buggy","hung"]`)
	assert.Contains(t, body, "timed out")
	assert.Contains(t, body, "panicked")
}

func TestReadyzFailsWhileShuttingDown(t *testing.T) {
	srv := adminhttp.New("127.0.0.1:0", nil, adminhttp.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, srv.Start(ctx))
	addr := srv.Addr()
	code, _ := get(t, "http://"+addr+"/readyz")
	assert.Equal(t, http.StatusOK, code, "no checks means ready")

	// Cancelling Start's context shuts the server down gracefully.
	cancel()
	require.Eventually(t, func() bool {
		_, err := http.Get("http://" + addr + "/healthz")
		return err != nil
	}, 2*time.Second, 10*time.Millisecond)
	require.NoError(t, srv.Shutdown(context.Background()), "second shutdown is a no-op")

	// A draining server reports not-ready so traffic moves away first.
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Contains(t, rec.Body.String(), "shutting_down")
}

func TestStartReportsBindError(t *testing.T) {
	a := adminhttp.New("127.0.0.1:0", nil, adminhttp.Options{})
	require.NoError(t, a.Start(t.Context()))
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	b := adminhttp.New(a.Addr(), nil, adminhttp.Options{})
	err := b.Start(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "admin server listen on")
}
