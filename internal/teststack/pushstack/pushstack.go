// Package pushstack runs real pusher replicas on a teststack.Stack, for the
// tests of the pusher, of optoutctl and of the admin page, and for
// bench/chaos. It is apart from teststack because it imports the pusher:
// the reconciler's tests use the stack without reaching another service.
package pushstack

import (
	"context"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// FastConfig is the pusher tuned so failures, retries and a killed
// replica's claims take milliseconds to seconds.
func FastConfig() push.Config {
	c := push.DefaultConfig()
	c.Workers = 4
	c.BackoffInitial = 20 * time.Millisecond
	c.BackoffMax = 300 * time.Millisecond
	c.BreakerThreshold = 3
	c.BreakerCooldown = 100 * time.Millisecond
	c.QuotaPause = 200 * time.Millisecond
	c.HealthRecheck = 200 * time.Millisecond
	c.DiscoveryInterval = 50 * time.Millisecond
	c.SweepInterval = 100 * time.Millisecond
	// A replica killed mid-call holds its persons this long.
	c.ClaimTTL = 4 * time.Second
	return c
}

// Options shape one replica; the zero value runs it on the stack's
// Salesforce clients until the test ends.
type Options struct {
	// Ctx, when set, kills the replica mid-work when cancelled (as a
	// killed process stops); by default it runs until the stack's context
	// ends or Stop.
	Ctx context.Context
	// Clients are its Salesforce clients (default the stack's): a test
	// wraps the stack's to see, hold or fail calls.
	Clients sfwrite.Clients
	// ErrorsOnly logs errors only (default: warnings and up). Every line
	// goes to the test's log and to the stack's Logs.
	ErrorsOnly bool
	// Metrics are its instruments (default its own, on no exporter).
	Metrics *push.Metrics
	// Adjust changes the service before it runs (its clock, say).
	Adjust func(*push.Service)
}

// Replica is one running pusher.
type Replica struct {
	// Cache is the replica's view of the tenant settings: a test waits on
	// it to know a change has reached the replica.
	Cache *tenant.Cache
	// Stop stops the replica and waits until it has (also at the test's
	// end).
	Stop func()
}

// Start runs a pusher replica with cfg on the stack.
func Start(s *teststack.Stack, cfg push.Config, o Options) *Replica {
	s.T.Helper()
	cache := s.WatchSettings()
	parent := o.Ctx
	if parent == nil {
		parent = s.Ctx
	}
	clients := o.Clients
	if clients == nil {
		clients = s.Clients
	}
	level := zerolog.WarnLevel
	if o.ErrorsOnly {
		level = zerolog.ErrorLevel
	}
	ctx, cancel := context.WithCancel(parent)
	svc := &push.Service{
		Cfg: cfg, JS: s.Prov.JS, Topology: s.Topo, Ledger: s.Ledger, Settings: cache, Clients: clients,
		Health: s.Health, Log: zerolog.New(io.MultiWriter(zerolog.NewTestWriter(s.T), s.Logs)).Level(level),
		Metrics: o.Metrics,
	}
	if o.Adjust != nil {
		o.Adjust(svc)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			s.T.Errorf("pusher: %v", err)
		}
	}()
	stop := func() { cancel(); <-done }
	s.T.Cleanup(stop)
	return &Replica{Cache: cache, Stop: stop}
}
