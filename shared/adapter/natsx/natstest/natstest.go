// Package natstest connects tests to the real NATS server and gives each
// test its own namespace, so tests run in parallel and leave nothing behind.
package natstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// DefaultURL is the current nats-server scripts/test-prereqs starts (make
// test): its own port, so an older server a machine runs on 4222 is never
// what the tests prove.
const DefaultURL = "nats://127.0.0.1:4322"

// URL is the server tests use: $NATS_URL, or DefaultURL.
func URL() string {
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// TB is what natstest needs of its caller: testing.TB has it, and so has the
// runner of a program built on the test stack (bench/chaos), which is not a
// test and never short.
type TB interface {
	Helper()
	Name() string
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Connect dials the test server and closes the connection at cleanup.
// Under -short (make test-short) it skips the test instead: the fast tier
// runs without servers.
func Connect(t TB) *nats.Conn {
	t.Helper()
	// testing.Short panics outside a test binary: only a test asks it.
	if tb, ok := t.(testing.TB); ok && testing.Short() {
		tb.Skip("needs NATS (" + URL() + "): skipped under -short; make test runs it")
	}
	nc, err := nats.Connect(URL(), nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("connect to NATS at %s (is nats-server -js running? scripts/test-prereqs starts it): %v", URL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Namespace returns a fresh namespace token such as "t3f9a1c2e".
func Namespace() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// Topology is the default topology in a fresh namespace, in memory storage,
// torn down at cleanup.
func Topology(t TB, nc *nats.Conn) natsx.Topology {
	t.Helper()
	topo := natsx.DefaultTopology()
	topo.Namespace = Namespace()
	topo.Storage = jetstream.MemoryStorage
	topo.Replicas = 1
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := natsx.Teardown(ctx, nc, topo); err != nil {
			t.Errorf("teardown %s: %v", topo.Namespace, err)
		}
	})
	return topo
}

// Provision provisions a fresh topology.
func Provision(t TB, nc *nats.Conn) *natsx.Provisioned {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := natsx.Provision(ctx, nc, Topology(t, nc))
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return p
}
