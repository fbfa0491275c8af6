// Package bench measures the pusher end to end: a burst of opt-outs across
// tenants against a sandbox that answers slowly, then a trickle, and the raw
// broker rate from `nats bench` for comparison. Results go to a Markdown file.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/demo/publisher"
	"github.com/optout-sync/optout-sync/services/demo/stack"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// Options of a benchmark run.
type Options struct {
	NATSURL string
	Out     string
	// Zero values take the figures: 100,000 opt-outs, 10 tenants,
	// 100 ms per Salesforce call, a 30 s trickle at 10 per second.
	Total, Tenants  int
	Latency         time.Duration
	TrickleRate     int
	TrickleDuration time.Duration
}

func (o *Options) defaults() {
	if o.Total == 0 {
		o.Total = 100_000
	}
	if o.Tenants == 0 {
		o.Tenants = 10
	}
	if o.Latency == 0 {
		o.Latency = 100 * time.Millisecond
	}
	if o.TrickleRate == 0 {
		o.TrickleRate = 10
	}
	if o.TrickleDuration == 0 {
		o.TrickleDuration = 30 * time.Second
	}
}

// Run performs the benchmark and writes the report.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	var b [3]byte
	_, _ = rand.Read(b[:])
	tenants := make([]string, o.Tenants)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("bench%02d", i)
	}
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: o.NATSURL, SandboxListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Tenants: tenants, RecordsPerOrg: o.Total / o.Tenants, SandboxLatency: o.Latency,
		Namespace: "bench" + hex.EncodeToString(b[:]), Log: zerolog.Nop(),
	})
	if err != nil {
		return err
	}
	defer func() {
		_ = natsx.Teardown(context.Background(), s.NC, s.Topology)
		s.Close()
	}()
	m := s.Pusher.Service.Metrics
	runCtx, stopPusher := context.WithCancel(ctx)
	defer stopPusher()
	go func() { _ = s.Pusher.Run(runCtx) }()

	// Burst: one opt-out for every seeded record, published concurrently.
	pub := natsx.Publisher{JS: s.Pusher.Service.JS, Topology: s.Topology}
	var all []owned
	for _, t := range tenants {
		for _, r := range s.Sandbox.Org(t).Records() {
			all = append(all, owned{t, r})
		}
	}
	start := time.Now()
	if err := publishAll(ctx, pub, all); err != nil {
		return err
	}
	published := time.Since(start)
	if err := waitFor(ctx, func() bool { return m.Pushed.Load() >= int64(len(all)) }, 30*time.Minute); err != nil {
		return fmt.Errorf("burst did not drain: pushed %d of %d: %w", m.Pushed.Load(), len(all), err)
	}
	drain := time.Since(start)
	burstLat := m.Latencies()
	calls := m.Calls.Load()
	apiCalls := 0
	for _, t := range tenants {
		apiCalls += s.Sandbox.Org(t).APICalls()
	}

	// Trickle: a steady low rate on warm workers, on fresh records (the burst's
	// are already opted out, so repeating them would write nothing).
	before := len(m.Latencies())
	n := int(o.TrickleDuration.Seconds()) * o.TrickleRate
	fresh := s.Sandbox.Org(tenants[0]).Seed(sandbox.SeedSpec{Contacts: n})
	tp := &publisher.Publisher{Pub: pub}
	tick := time.NewTicker(time.Second / time.Duration(o.TrickleRate))
	for _, r := range fresh {
		<-tick.C
		if err := tp.PublishRecord(ctx, tenants[0], r); err != nil {
			tick.Stop()
			return fmt.Errorf("trickle: %w", err)
		}
	}
	tick.Stop()
	_ = waitFor(ctx, func() bool { return len(m.Latencies()) >= before+n }, time.Minute)
	trickleLat := m.Latencies()[before:]

	broker, brokerErr := natsBench(ctx, s.NC.ConnectedUrl())
	rate := float64(len(all)) / drain.Seconds()

	var rep bytes.Buffer
	p50, p99 := Percentiles(burstLat)
	t50, t99 := Percentiles(trickleLat)
	fmt.Fprintf(&rep, "# Pusher benchmark\n\n")
	fmt.Fprintf(&rep, "Run %s on %d CPUs (%s), NATS at %s (embedded: %t). Command: `make bench-pusher`.\n",
		time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.GOARCH, s.NC.ConnectedUrl(), s.Embedded)
	fmt.Fprintf(&rep, "Sandbox latency %s per Salesforce call; pusher defaults (8 workers, batches of 200, linger 25ms).\n", o.Latency)
	fmt.Fprintf(&rep, "Everything (sandbox holding %d records, pusher, publisher) runs in one process, so peak RSS includes the sandbox.\n\n", len(all))
	fmt.Fprintf(&rep, "## Burst: %d opt-outs across %d tenants, published at once\n\n", len(all), o.Tenants)
	fmt.Fprintf(&rep, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&rep, "| publish time | %s |\n| drain time (first publish to last confirmation) | %s |\n", published.Round(time.Millisecond), drain.Round(time.Millisecond))
	fmt.Fprintf(&rep, "| opt-outs per second | %.0f |\n", rate)
	fmt.Fprintf(&rep, "| Salesforce write calls per opt-out | %.4f (%d calls; minimum %d) |\n", float64(calls)/float64(len(all)), calls, (len(all)+199)/200)
	fmt.Fprintf(&rep, "| all Salesforce API calls (incl. tokens) | %d |\n", apiCalls)
	fmt.Fprintf(&rep, "| publish-to-applied latency p50 / p99 | %s / %s |\n", p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	fmt.Fprintf(&rep, "| peak RSS | %s |\n\n", peakRSS())
	fmt.Fprintf(&rep, "## Trickle: %d opt-outs per second for %s\n\n", o.TrickleRate, o.TrickleDuration)
	fmt.Fprintf(&rep, "| measure | value |\n|---|---|\n| opt-outs | %d |\n| latency p50 / p99 | %s / %s |\n\n",
		len(trickleLat), t50.Round(time.Millisecond), t99.Round(time.Millisecond))
	fmt.Fprintf(&rep, "## Raw broker rate (`nats bench`)\n\n")
	if brokerErr != nil {
		fmt.Fprintf(&rep, "nats bench failed: %v\n", brokerErr)
	} else {
		fmt.Fprintf(&rep, "```\n%s\n```\n\n", strings.TrimSpace(broker.output))
		if broker.pubRate > 0 {
			fmt.Fprintf(&rep, "Pipeline throughput is %.4f of the raw JetStream publish rate (%.0f msgs/s) and %.4f of the raw consume rate (%.0f msgs/s).\n",
				rate/broker.pubRate, broker.pubRate, rate/max(broker.subRate, 1), broker.subRate)
		}
	}
	if err := os.WriteFile(o.Out, rep.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Print(rep.String())
	return nil
}

// owned is a seeded record and the tenant whose org holds it.
type owned struct {
	tenant string
	rec    sandbox.Record
}

func publishAll(ctx context.Context, pub natsx.Publisher, recs []owned) error {
	const workers = 16
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &publisher.Publisher{Pub: pub}
			for i := w; i < len(recs); i += workers {
				if err := p.PublishRecord(ctx, recs[i].tenant, recs[i].rec); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func waitFor(ctx context.Context, cond func() bool, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Percentiles returns p50 and p99 of ds.
func Percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}

func peakRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

type brokerRate struct {
	output           string
	pubRate, subRate float64
}

var rateRe = regexp.MustCompile(`([0-9,]+) msgs/sec`)

// natsBench runs the nats CLI's JetStream publish and consume benchmarks at
// the pipeline's message size, pinned to one natscli version.
func natsBench(ctx context.Context, url string) (brokerRate, error) {
	var out brokerRate
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "go", append([]string{"run", "github.com/nats-io/natscli/nats@v0.5.0", "--server", url}, args...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	const stream = "optout_bench_raw"
	common := []string{"--stream", stream, "--msgs", "100000", "--size", "150", "--no-progress"}
	pubOut, err := run(append([]string{"bench", "js", "pub", "async", "optout.bench.raw", "--create", "--storage", "file", "--purge"}, common...)...)
	out.output += pubOut
	if err != nil {
		return out, fmt.Errorf("nats bench js pub: %w", err)
	}
	out.pubRate = lastRate(pubOut)
	subOut, err := run(append([]string{"bench", "js", "consume"}, common...)...)
	out.output += subOut
	out.subRate = lastRate(subOut)
	_, _ = run("stream", "rm", "-f", stream)
	if err != nil {
		return out, fmt.Errorf("nats bench js consume: %w", err)
	}
	return out, nil
}

func lastRate(s string) float64 {
	m := rateRe.FindAllStringSubmatch(s, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.ReplaceAll(m[len(m)-1][1], ",", ""), 64)
	return v
}
