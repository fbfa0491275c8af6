// Command demo runs a local optout-sync: the Salesforce sandbox with seeded
// orgs, a pusher, and a publisher sending a steady stream of opt-outs, and
// prints progress until Ctrl-C. With -bench it runs the pusher benchmark.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/demo/bench"
	"github.com/optout-sync/optout-sync/services/demo/publisher"
	"github.com/optout-sync/optout-sync/services/demo/stack"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/logx"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

func main() {
	natsURL := flag.String("nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server; an embedded one starts when none answers")
	sbListen := flag.String("sandbox", "127.0.0.1:8085", "sandbox listen address")
	admin := flag.String("admin", "127.0.0.1:9090", "pusher admin address (/metrics)")
	rate := flag.Int("rate", 20, "opt-outs published per second")
	records := flag.Int("records", 2000, "records seeded per org")
	latency := flag.Duration("latency", 50*time.Millisecond, "sandbox latency per call")
	benchOut := flag.String("bench", "", "run the pusher benchmark and write its report to this file")
	benchTotal := flag.Int("bench-total", 100_000, "benchmark: opt-outs in the burst")
	benchTrickle := flag.Duration("bench-trickle", 30*time.Second, "benchmark: length of the trickle")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *benchOut != "" {
		if err := bench.Run(ctx, bench.Options{NATSURL: *natsURL, Out: *benchOut, Total: *benchTotal, TrickleDuration: *benchTrickle}); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	log := logx.New("demo", os.Stderr).Level(zerolog.WarnLevel)
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: *natsURL, SandboxListen: *sbListen, AdminListen: *admin,
		Tenants: []string{"acme", "globex"}, RecordsPerOrg: *records, SandboxLatency: *latency,
		Namespace: "demo", Log: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	defer s.Close()
	pub := &publisher.Publisher{
		Pub: natsx.Publisher{JS: s.Pusher.Service.JS, Topology: s.Topology}, Tenants: []string{"acme", "globex"},
		Records: map[string][]sandbox.Record{}, NoIDShare: 0.05, InvalidShare: 0.02,
	}
	for _, t := range pub.Tenants {
		pub.Records[t] = s.Sandbox.Org(t).Records()
	}
	where := "the machine's NATS at " + s.NC.ConnectedUrl()
	if s.Embedded {
		where = "an embedded JetStream server at " + s.NC.ConnectedUrl()
	}
	fmt.Printf("optout-sync demo: %s; sandbox %s (orgs acme: sales field, globex: Email Opt Out); metrics http://%s/metrics\n", where, s.SandboxURL, *admin)
	fmt.Printf("publishing %d opt-outs/s (5%% without a Salesforce id, 2%% malformed); Ctrl-C to stop\n", *rate)

	go func() {
		if err := s.Pusher.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "pusher:", err)
		}
	}()
	go func() { _ = pub.Run(ctx, *rate) }()
	progress(ctx, s, pub)
}

func progress(ctx context.Context, s *stack.Stack, pub *publisher.Publisher) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	m := s.Pusher.Service.Metrics
	for {
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping")
			return
		case <-tick.C:
			p50, p99 := bench.Percentiles(m.Latencies())
			fmt.Printf("published %6d  pushed %6d  parked %4d  dead-lettered %4d  salesforce calls %5d  latency p50 %-8s p99 %s\n",
				pub.Published.Load(), m.Pushed.Load(), m.Parked.Load(), m.DeadLettered.Load(), m.Calls.Load(),
				p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
