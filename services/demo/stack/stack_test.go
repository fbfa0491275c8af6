package stack_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/demo/publisher"
	"github.com/optout-sync/optout-sync/services/demo/stack"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
)

// TestDemoStartsItsOwnNATSWhenNoneAnswers is the README's first command on a
// machine without a NATS server: the demo must still push opt-outs.
func TestDemoStartsItsOwnNATSWhenNoneAnswers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: "nats://127.0.0.1:1", SandboxListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Tenants: []string{"acme", "globex"}, RecordsPerOrg: 20, Namespace: natstest.Namespace(), Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Embedded {
		t.Fatal("no embedded NATS server was started")
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = s.Pusher.Run(runCtx) }()

	recs := s.Sandbox.Org("globex").Records()
	p := &publisher.Publisher{Pub: natsx.Publisher{JS: s.Pusher.Service.JS, Topology: s.Topology}}
	if err := p.PublishRecord(ctx, "globex", recs[0]); err != nil {
		t.Fatal(err)
	}
	// Pushed counts once the ledger has recorded Salesforce's confirmation,
	// just after the sandbox shows the write.
	for {
		if r, _ := s.Sandbox.Org("globex").Get(recs[0].ID); r.HasOptedOutOfEmail && s.Pusher.Service.Metrics.Pushed.Load() == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the demo's opt-out never reached the sandbox")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// oldServer answers like a nats-server 2.9.10 with JetStream: INFO, then a
// PONG to each PING, which is all a client needs to connect.
func oldServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte(`INFO {"server_id":"OLD","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"jetstream":true}` + "\r\n"))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "PING") {
						_, _ = c.Write([]byte("PONG\r\n"))
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// TestDemoPassesOverAServerOlderThanSupported: the machine's NATS answers
// but predates the supported minimum; the demo runs the embedded (current)
// server instead and says why.
func TestDemoPassesOverAServerOlderThanSupported(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: oldServer(t), SandboxListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Tenants: []string{"acme"}, RecordsPerOrg: 2, Namespace: natstest.Namespace(), Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Embedded || !strings.Contains(s.PassedOver, "2.9.10 is older than "+natsx.MinServerVersion) {
		t.Fatalf("embedded = %v, passed over = %q; want the embedded server, passing over 2.9.10", s.Embedded, s.PassedOver)
	}
	if err := natsx.CheckServerVersion(s.NC.ConnectedServerVersion()); err != nil {
		t.Fatalf("the embedded server: %v", err)
	}
}
