// Package adminhttp is the per-process admin HTTP server: Prometheus
// /metrics, liveness /healthz, readiness /readyz, and room for extra
// handlers (the admin page). It is meant for an internal port that is not
// exposed publicly.
package adminhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// CheckFunc reports whether a dependency is ready; a non-nil error means not
// ready. It must honour ctx, which carries the check timeout.
type CheckFunc func(ctx context.Context) error

// Options tune a Server; zero values pick the defaults.
type Options struct {
	// CheckTimeout bounds each readiness check (default 2s), so one hung
	// dependency cannot hang the kubelet probe.
	CheckTimeout time.Duration
	// ShutdownGrace bounds the graceful shutdown triggered by Start's
	// context being cancelled (default 5s).
	ShutdownGrace time.Duration
}

// Server is the admin HTTP server. The zero value is not usable; use New.
type Server struct {
	addr string
	opts Options
	mux  *http.ServeMux
	srv  *http.Server

	mu     sync.Mutex
	checks []namedCheck
	ln     net.Listener

	draining atomic.Bool
	serveErr chan error
	stopOnce sync.Once
}

type namedCheck struct {
	name string
	fn   CheckFunc
}

// New returns a server for addr (host:port; ":0" picks a free port) serving
// gatherer on /metrics (pass telemetry.Providers.Registry), /healthz and
// /readyz. A nil gatherer serves prometheus.DefaultGatherer.
func New(addr string, gatherer prometheus.Gatherer, opts Options) *Server {
	if gatherer == nil {
		gatherer = prometheus.DefaultGatherer
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 2 * time.Second
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 5 * time.Second
	}
	s := &Server{addr: addr, opts: opts, mux: http.NewServeMux(), serveErr: make(chan error, 1)}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
	return s
}

// AddCheck registers a named readiness check. Safe to call at any time.
func (s *Server) AddCheck(name string, fn CheckFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name: name, fn: fn})
}

// Handle mounts an extra handler using http.ServeMux patterns (e.g.
// "GET /admin/"). It panics on a conflicting pattern, like ServeMux.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.mux.HandleFunc(pattern, h)
}

// Handler returns the server's router, e.g. for httptest.
func (s *Server) Handler() http.Handler { return s.mux }

// Start binds the address (so "address in use" is returned here, not lost
// in a goroutine) and serves in the background. When ctx is cancelled the
// server shuts down gracefully within Options.ShutdownGrace.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin server listen on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownGrace)
		defer cancel()
		_ = s.Shutdown(sctx)
	}()
	return nil
}

// Addr returns the bound address after Start (useful with ":0"), else the
// configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.addr
}

// Shutdown marks the process not ready (so load balancers stop routing
// while in-flight requests finish), then stops the server gracefully. It
// returns the error that ended serving, if any. Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	var err error
	s.stopOnce.Do(func() {
		if e := s.srv.Shutdown(ctx); e != nil {
			// Grace period over: drop the remaining connections.
			_ = s.srv.Close()
			err = fmt.Errorf("admin server shutdown: %w", e)
			return
		}
		s.mu.Lock()
		started := s.ln != nil
		s.mu.Unlock()
		if started {
			if e := <-s.serveErr; e != nil {
				err = fmt.Errorf("admin server serve: %w", e)
			}
		}
	})
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	// Liveness only says the process can answer; dependency failures
	// belong to readiness, or a NATS blip would restart every pod.
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// readyResponse is the /readyz body.
type readyResponse struct {
	Status string            `json:"status"`
	Failed []string          `json:"failed,omitempty"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, readyResponse{
			Status: "shutting_down", Failed: []string{"shutdown"}, Checks: map[string]string{"shutdown": "server is shutting down"},
		})
		return
	}
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()

	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			results[i] = runCheck(r.Context(), s.opts.CheckTimeout, c.fn)
		})
	}
	wg.Wait()

	resp := readyResponse{Status: "ok", Checks: make(map[string]string, len(checks))}
	for i, c := range checks {
		if err := results[i]; err != nil {
			// Check errors often quote URLs and credentials.
			resp.Checks[c.name] = logx.Redact(err.Error())
			resp.Failed = append(resp.Failed, c.name)
			continue
		}
		resp.Checks[c.name] = "ok"
	}
	status := http.StatusOK
	if len(resp.Failed) > 0 {
		sort.Strings(resp.Failed)
		resp.Status = "unavailable"
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, resp)
}

// runCheck runs fn with a timeout and turns a panic into a failure, so a
// buggy check cannot take the admin server down.
func runCheck(ctx context.Context, timeout time.Duration, fn CheckFunc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- fn(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The check ignored its context; report it instead of waiting.
		return fmt.Errorf("check timed out after %s: %w", timeout, ctx.Err())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
