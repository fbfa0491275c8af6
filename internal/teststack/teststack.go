// Package teststack stands up, in process, what the services' tests and
// bench/chaos run against, written once: a fresh NATS namespace on the test
// server (natstest), the Salesforce sandbox with one tenant per org
// (testsandbox), the ledger, the tenant settings and health stores, and the
// credential variables (changeable while replicas run). It runs no service:
// the tests of every service may use it. A pusher replica is
// teststack/pushstack's, a reconciler replica teststack/reconstack's.
//
// Each harness (the pusher's tests, optoutctl's testkit, the reconciler's
// recontest, the admin page's e2e test) wraps a Stack with its own helpers.
package teststack

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/optout-sync/optout-sync/internal/testsandbox"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// TB is what the stack needs of its caller. *testing.T has it; so has the
// runner of bench/chaos, a program that runs the stack outside go test.
// Log, Logf and Helper make it a zerolog.TestingLog.
type TB interface {
	Helper()
	Name() string
	Cleanup(func())
	Log(args ...any)
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Options shape a stack; the zero value is the common case.
type Options struct {
	// Within bounds the stack's context, so a test that hangs ends
	// (default 90 s).
	Within time.Duration
	// AckWait, when set, is the pusher consumer's ack wait (a replica
	// killed mid-batch has its events redelivered this soon).
	AckWait time.Duration
}

// Stack is one test's system.
type Stack struct {
	T       TB
	Ctx     context.Context
	NC      *nats.Conn
	Prov    *natsx.Provisioned
	Topo    natsx.Topology
	Sandbox *sandbox.Sandbox
	SFURL   string // the sandbox's control API
	// Env holds the orgs' SF_<TENANT>_* credential variables.
	Env      *Env
	Ledger   *ledger.Ledger
	Settings tenant.Store
	Health   tenant.HealthStore
	// Clients reads credentials from Env as the services do, re-reading
	// them every 50 ms, so a change to Env reaches running replicas.
	Clients *sfcreds.Pool
	// Logs keeps the JSON lines the stack's replicas log.
	Logs *LogSink
}

// New provisions a fresh namespace, serves the sandbox with orgs (one
// tenant each, named after the org) and opens the ledger. Under -short the
// test is skipped (natstest.Connect): it needs NATS.
func New(t TB, orgs []sandbox.OrgConfig, o Options) *Stack {
	t.Helper()
	if o.Within == 0 {
		o.Within = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Within)
	t.Cleanup(cancel)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)
	if o.AckWait != 0 {
		topo.PusherAckWait = o.AckWait
	}
	prov, err := natsx.Provision(ctx, nc, topo)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := ledger.New(ctx, prov)
	if err != nil {
		t.Fatal(err)
	}
	sb, sbURL, env := testsandbox.Serve(t, orgs)
	s := &Stack{
		T: t, Ctx: ctx, NC: nc, Prov: prov, Topo: topo, Sandbox: sb, SFURL: sbURL,
		Env:      &Env{m: env},
		Ledger:   lg,
		Settings: tenant.Store{KV: prov.Tenants},
		Health:   tenant.HealthStore{KV: prov.Health},
		Logs:     &LogSink{},
	}
	s.Clients = &sfcreds.Pool{Source: s.SFSource(), Refresh: 50 * time.Millisecond}
	return s
}

// SFSource reads the credentials from Env the way the services do.
func (s *Stack) SFSource() sfcreds.Source { return sfcreds.Source{Lookup: s.Env.Lookup} }

// Org is the sandbox org of a tenant.
func (s *Stack) Org(name string) *sandbox.Org { return s.Sandbox.Org(name) }

// PutSettings stores a tenant's settings: the defaults, then f.
func (s *Stack) PutSettings(tenantID string, f func(*tenant.Settings)) tenant.Settings {
	s.T.Helper()
	st := tenant.Default(tenantID)
	if f != nil {
		f(&st)
	}
	if err := s.Settings.Put(s.Ctx, st); err != nil {
		s.T.Fatal(err)
	}
	return st
}

// WatchSettings is a replica's view of the tenant settings, kept current
// until the stack's context ends.
func (s *Stack) WatchSettings() *tenant.Cache {
	s.T.Helper()
	cache, err := tenant.Watch(s.Ctx, s.Prov.Tenants)
	if err != nil {
		s.T.Fatal(err)
	}
	return cache
}

// Eventually polls cond until it holds; past within it fails the test
// (a wait, not a timing assertion: the deadline only ends a hung test).
func (s *Stack) Eventually(what string, within time.Duration, cond func() bool) {
	s.T.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			s.T.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PendingAcks is the tenant's backlog as operators see it
// (eventstream.TenantBacklog): events delivered and not acknowledged, and
// events not delivered yet; -1, 0 before the tenant's consumer exists.
func (s *Stack) PendingAcks(tenantID string) (ackPending int, undelivered uint64) {
	b, err := eventstream.TenantBacklog(s.Ctx, s.Prov.JS, s.Topo, tenantID)
	if err != nil || !b.ConsumerExists {
		return -1, 0
	}
	return b.InFlight, b.Waiting
}

// Drained: every event of the tenant delivered and acknowledged.
func (s *Stack) Drained(tenantID string) bool {
	a, u := s.PendingAcks(tenantID)
	return a == 0 && u == 0
}

// Dirty counts the tenant's persons whose Salesforce value is not yet what
// the ledger wants.
func (s *Stack) Dirty(tenantID string) int {
	s.T.Helper()
	n := 0
	if err := s.Ledger.Dirty(s.Ctx, tenantID, func(ledger.DirtyItem) { n++ }); err != nil {
		s.T.Fatal(err)
	}
	return n
}

// Settled: every event of the tenant folded into the ledger and no person
// dirty.
func (s *Stack) Settled(tenantID string) bool {
	return s.Drained(tenantID) && s.Dirty(tenantID) == 0
}

// Env is the credentials environment, changeable while replicas read it.
type Env struct {
	mu sync.Mutex
	m  map[string]string
}

// Lookup reads one variable (an os.LookupEnv).
func (e *Env) Lookup(k string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.m[k]
	return v, ok
}

// Set sets one variable.
func (e *Env) Set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[k] = v
}

// Cut removes every variable whose name starts with prefix and returns
// them.
func (e *Env) Cut(prefix string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	cut := map[string]string{}
	for k, v := range e.m {
		if strings.HasPrefix(k, prefix) {
			cut[k] = v
			delete(e.m, k)
		}
	}
	return cut
}

// Map is a copy of every variable.
func (e *Env) Map() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.m)
}

// LogSink keeps the JSON log lines replicas write.
type LogSink struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *LogSink) Write(p []byte) (int, error) {
	var m map[string]any
	if json.Unmarshal(p, &m) == nil {
		l.mu.Lock()
		l.lines = append(l.lines, m)
		l.mu.Unlock()
	}
	return len(p), nil
}

// Count is how many lines have message msg and the tenant field t.
func (l *LogSink) Count(msg, t string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.lines {
		if m["message"] == msg && m["tenant"] == t {
			n++
		}
	}
	return n
}
