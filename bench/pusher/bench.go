// Command pusher (make bench-pusher) measures the pusher as it runs in
// production, each part in its own process on 127.0.0.1: a nats-server of
// its own (file storage), the
// pusher binary, the Salesforce sandbox binary and a publisher process
// publishing asynchronously; `nats bench` measures the same server's raw
// rates in the same run. Scenarios (issue 12): a burst, a trickle, the
// pusher's memory, one slow tenant among a thousand, and a profile. Results
// go to a Markdown file with the targets beside them.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"

	"github.com/optout-sync/optout-sync/internal/harness"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// Options of a benchmark run. Zero values take the figures.
type Options struct {
	Out string
	// Bin holds nats-server, pusher and sfsandbox (make bench-pusher builds
	// them); Self is this program, run again as the publisher process.
	Bin, Self string
	// Burst: Total opt-outs over Tenants tenants, Salesforce at Latency.
	Total, Tenants int
	Latency        time.Duration
	// Trickle: TrickleRate opt-outs a second on each of two tenants (Email
	// Opt Out, sales field) for TrickleDuration.
	TrickleRate     int
	TrickleDuration time.Duration
	// Isolation: IsoTenants tenants at one opt-out a second each, for
	// IsoDuration without and then with one tenant at SlowLatency a call
	// (negative IsoTenants: skip).
	IsoTenants  int
	IsoDuration time.Duration
	// IsoSmall repeats the isolation run with fewer tenants, below this
	// machine's saturation, so the ratio shows the isolation itself
	// (negative: skip).
	IsoSmall    int
	SlowLatency time.Duration
	// SyncAlways runs the server with sync_interval: always (fsync per
	// write), as deploy/README.md advises for production.
	SyncAlways bool
	// PusherEnv is added to the pusher's environment (OPTOUT_WORKERS=…).
	PusherEnv []string
	// Keep leaves the run's directory (logs, profiles, store) in place.
	Keep bool
	// SkipMain runs only the isolation scenario (d), when working on it.
	SkipMain bool
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
	if o.IsoTenants == 0 {
		o.IsoTenants = 1000
	}
	if o.IsoSmall == 0 {
		o.IsoSmall = 200
	}
	if o.IsoDuration == 0 {
		o.IsoDuration = 20 * time.Second
	}
	if o.SlowLatency == 0 {
		o.SlowLatency = 10 * time.Second
	}
	if o.Bin == "" {
		o.Bin = "bin"
	}
}

// The trickle's tenants: one writes Email Opt Out, one the sales field.
const (
	emailTenant = "tremail"
	salesTenant = "trsales"
	// loneTenant publishes one opt-out as the burst's publish ends: how
	// long it waits behind the burst is the head-of-line cost.
	loneTenant = "lone"
)

// Run performs every scenario and writes the report.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	dir, err := os.MkdirTemp("", "optout-bench-")
	if err != nil {
		return err
	}
	if o.Keep {
		fmt.Fprintf(os.Stderr, "bench: run directory %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	cli, err := natsCLI(ctx)
	if err != nil {
		return err
	}
	rep := &report{opts: o, started: time.Now()}
	if !o.SkipMain {
		if err := runMain(ctx, o, dir, cli, rep); err != nil {
			return err
		}
	}
	// A failed isolation run is reported, not fatal: the other scenarios'
	// figures still stand.
	for _, n := range []int{o.IsoTenants, o.IsoSmall} {
		if n <= 0 {
			continue
		}
		// The earlier scenarios' servers left their stores' pages dirty in
		// the page cache (the default sync_interval never fsyncs them): the
		// kernel writing them back mid-run slowed whichever phase it hit,
		// and a p99 ratio measured that instead of the slow tenant.
		syscall.Sync()
		res := &isoResult{tenants: n}
		res.err = runIsolation(ctx, o, dir, n, res)
		rep.iso = append(rep.iso, res)
	}
	rep.took = time.Since(rep.started)
	text := rep.markdown()
	if err := os.WriteFile(o.Out, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Print(text)
	return nil
}

// env is one system under test: server, sandbox and pusher, each a process.
type env struct {
	o       Options
	dir     string
	nats    *natsProc
	sb      *sandboxProc
	pusher  *harness.Proc
	admin   string // pusher admin origin
	nc      *nats.Conn
	prov    *natsx.Provisioned
	ledger  *ledger.Ledger
	tenants []string
}

// start brings up a server, a sandbox holding tenants' orgs (sales: those on
// the sales field) and the pusher, with the tenants' settings in place.
func start(ctx context.Context, o Options, dir string, tenants []string, sales map[string]bool) (_ *env, err error) {
	e := &env{o: o, dir: dir, tenants: tenants}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if e.nats, err = startNATS(ctx, filepath.Join(o.Bin, "nats-server"), dir, o.SyncAlways); err != nil {
		return nil, err
	}
	if e.sb, err = startSandbox(ctx, filepath.Join(o.Bin, "sfsandbox"), dir, tenants, sales); err != nil {
		return nil, err
	}
	creds := filepath.Join(dir, "creds")
	if err := writeCreds(creds, e.sb.orgs); err != nil {
		return nil, err
	}
	if e.nc, err = nats.Connect(e.nats.url, nats.Name("optout-bench")); err != nil {
		return nil, err
	}
	if e.prov, err = natsx.Provision(ctx, e.nc, natsx.DefaultTopology()); err != nil {
		return nil, err
	}
	if e.ledger, err = ledger.New(ctx, e.prov); err != nil {
		return nil, err
	}
	store := tenant.Store{KV: e.prov.Tenants}
	for _, t := range tenants {
		st := tenant.Default(t)
		st.SyncEnabled = true
		if sales[t] {
			st.Field = tenant.SalesOptOut
		}
		if err := store.Put(ctx, st); err != nil {
			return nil, err
		}
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	e.admin = fmt.Sprintf("http://127.0.0.1:%d", port)
	penv := append([]string{
		"NATS_URL=" + e.nats.url,
		fmt.Sprintf("OPTOUT_ADMIN_ADDR=127.0.0.1:%d", port),
		"OPTOUT_SF_CREDENTIALS_DIR=" + creds,
		"OPTOUT_NATS_STORAGE=file",
		"OPTOUT_ADMIN_PPROF=true",
		"OPTOUT_EMAIL_HASH_KEY=bench-only-key-0123456789abcdef",
	}, o.PusherEnv...)
	if e.pusher, err = startProc("pusher", dir, filepath.Join(o.Bin, "pusher"), nil, penv); err != nil {
		return nil, err
	}
	if err := harness.WaitHTTP(ctx, e.pusher, e.admin+"/readyz", time.Minute); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.pusher != nil {
		_ = e.pusher.Stop(30 * time.Second)
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.sb != nil {
		_ = e.sb.Stop(5 * time.Second)
	}
	if e.nats != nil {
		_ = e.nats.Stop(10 * time.Second)
	}
}

// publish runs the publisher process over items (at rate a second; 0: at
// once) and returns its result and its CPU time.
func (e *env) publish(ctx context.Context, name string, items []PubItem, rate float64) (PublishResult, time.Duration, error) {
	return e.publishTo(ctx, name, "", items, rate)
}

// publishTo publishes items into namespace's events stream.
func (e *env) publishTo(ctx context.Context, name, namespace string, items []PubItem, rate float64) (PublishResult, time.Duration, error) {
	spec := PublishSpec{NATSURL: e.nats.url, Namespace: namespace, Items: items, Rate: rate}
	b, err := json.Marshal(spec)
	if err != nil {
		return PublishResult{}, 0, err
	}
	path := filepath.Join(e.dir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return PublishResult{}, 0, err
	}
	cmd := exec.CommandContext(ctx, e.o.Self, "-publisher", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return PublishResult{}, cpu, fmt.Errorf("publisher: %w: %s", err, stderr.String())
	}
	var res PublishResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, cpu, fmt.Errorf("publisher result: %w", err)
	}
	if res.Errors > 0 {
		return res, cpu, fmt.Errorf("publisher: %d publishes failed, first: %s", res.Errors, res.FirstErr)
	}
	return res, cpu, nil
}

// warm publishes one opt-out per tenant and waits for all of them, so
// runners and Salesforce tokens exist before anything is timed.
func (e *env) warm(ctx context.Context, items []PubItem) error {
	w, err := watchConfirms(ctx, e.prov.Ledger, []string{">"})
	if err != nil {
		return err
	}
	defer w.stop()
	if _, _, err := e.publish(ctx, "warm", items, 0); err != nil {
		return err
	}
	return waitFor(ctx, func() bool { return w.count() >= len(items) }, 2*time.Minute,
		func() string { return fmt.Sprintf("%d of %d warm-up opt-outs confirmed", w.count(), len(items)) })
}

func (e *env) metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	return scrape(ctx, e.admin+"/metrics")
}

// profile fetches a CPU profile of seconds from a pprof endpoint into path
// (in the background; the returned channel yields the outcome).
func profile(ctx context.Context, base, path string, seconds int) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds), path)
	}()
	return done
}

// pprofTop is the top of a profile (flags: "-cum", "-sample_index=…").
func pprofTop(ctx context.Context, path string, n int, flags ...string) string {
	args := append(append([]string{"tool", "pprof", "-top"}, flags...), fmt.Sprintf("-nodecount=%d", n), path)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v: %s", err, out)
	}
	// Keep the table; drop pprof's preamble lines about files and build ids.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

func waitFor(ctx context.Context, cond func() bool, limit time.Duration, status func() string) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %s", limit, status())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
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

// items turns records into one opt-out each.
func items(t string, recs []sandbox.Record) []PubItem {
	out := make([]PubItem, len(recs))
	for i, r := range recs {
		out[i] = PubItem{Tenant: t, ID: r.ID, Type: r.Type}
	}
	return out
}

// interleave alternates the lists' items (round robin), so each list's
// items are evenly spread over a rate-limited run.
func interleave(lists ...[]PubItem) []PubItem {
	var out []PubItem
	for i := 0; ; i++ {
		added := false
		for _, l := range lists {
			if i < len(l) {
				out = append(out, l[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

// scanConfirmed reads every confirmed opt-out of tenants from the ledger
// after the fact (watching 100,000 confirmations live would load the very
// server being measured): publish-to-confirmed latencies and the last
// confirmation.
func scanConfirmed(ctx context.Context, l *ledger.Ledger, tenants []string) (lat []time.Duration, last time.Time, n int, err error) {
	for _, t := range tenants {
		err := l.Scan(ctx, t, func(it ledger.ScanItem) error {
			e := it.Entry
			if !confirmedOptOut(e) {
				return nil
			}
			n++
			lat = append(lat, e.ConfirmedAt.Sub(e.DecidedAt))
			if e.ConfirmedAt.After(last) {
				last = e.ConfirmedAt
			}
			return nil
		}, nil)
		if err != nil {
			return nil, time.Time{}, 0, err
		}
	}
	return lat, last, n, nil
}

// confirmedAfter is how long after its deciding event the opt-out of
// record id was confirmed.
func confirmedAfter(ctx context.Context, l *ledger.Ledger, tenant, id string) (time.Duration, error) {
	var d time.Duration
	found := false
	err := l.Scan(ctx, tenant, func(it ledger.ScanItem) error {
		if e := it.Entry; e.SalesforceID == id && confirmedOptOut(e) {
			d, found = e.ConfirmedAt.Sub(e.DecidedAt), true
		}
		return nil
	}, nil)
	if err == nil && !found {
		err = fmt.Errorf("%s's opt-out of %s is not confirmed", tenant, id)
	}
	return d, err
}

// fetchTo saves what url answers into path.
func fetchTo(ctx context.Context, url, path string) error {
	body, err := get(ctx, url)
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
