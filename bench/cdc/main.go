// Command cdc measures issue 22's Change Data Capture target: the time from
// a Salesforce edit to the applied event on optout.v1.applied.<tenant>, p99
// ≤ 2 s, with 10 tenants editing 100 records a second in all and 50 ms of
// sandbox latency, and the subscriber's CPU and RSS.
//
// The sandbox (one org per tenant) and the reconciler (which runs the
// subscriber, wired as in production) are each their own process; this
// program provisions the tenants (sync and CDC on), waits until every
// stream is up, then ticks the opt-out field of fresh records through the
// sandbox's control API (a user's edit, not our client's) at the rate asked
// for, open loop, and times each applied event from just before its edit was
// sent. The reconciler's CPU and RSS come from /proc.
//
//	go run ./bench/cdc                       # 60 s, writes bench/cdc.md
//	go run ./bench/cdc -duration 10s -out /tmp/cdc.md
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/optout-sync/optout-sync/internal/harness"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

type options struct {
	natsURL, redisURL string
	tenants, rate     int
	duration, latency time.Duration
	out               string
}

func main() {
	var o options
	flag.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:4322", "NATS with JetStream")
	flag.StringVar(&o.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis for the leases")
	flag.IntVar(&o.tenants, "tenants", 10, "tenants (one sandbox org each)")
	flag.IntVar(&o.rate, "rate", 100, "edits a second, all tenants together")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long to edit")
	flag.DurationVar(&o.latency, "latency", 50*time.Millisecond, "latency the sandbox adds to every data call")
	flag.StringVar(&o.out, "out", "bench/cdc.md", "report file")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func name(i int) string { return fmt.Sprintf("t%02d", i) }

func run(o options) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bench-cdc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "bench: building sfsandbox and reconciler")
	for _, b := range []string{"sfsandbox", "reconciler"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b), "github.com/optout-sync/optout-sync/services/"+b).CombinedOutput()
		if err != nil {
			return fmt.Errorf("build %s: %v\n%s", b, err, out)
		}
	}

	// The sandbox: one org per tenant.
	var cfg strings.Builder
	cfg.WriteString("orgs:\n")
	for i := range o.tenants {
		fmt.Fprintf(&cfg, "  - name: %s\n    clientId: %s-key\n    clientSecret: %s-secret-Bx12\n    username: integration@%s.example.com\n    dailyApiLimit: 10000000\n",
			name(i), name(i), name(i), name(i))
	}
	orgsFile := filepath.Join(dir, "orgs.yaml")
	if err := os.WriteFile(orgsFile, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	sbLog := filepath.Join(dir, "sfsandbox.log")
	sb := &harness.Proc{Name: "sfsandbox", Bin: filepath.Join(dir, "sfsandbox"), Log: sbLog, Env: os.Environ(),
		Args: []string{"--listen", "127.0.0.1:0", "--pubsub-listen", "127.0.0.1:0", "--free-org-ports", "--orgs", orgsFile}}
	if err := sb.Start(); err != nil {
		return err
	}
	defer func() { _ = sb.Stop(10 * time.Second) }()
	addrs, err := sandboxAddrs(sb, sbLog, o.tenants)
	if err != nil {
		return err
	}

	// Records to edit: fresh ones (seeding sends no change events), one per
	// edit, so every edit is a real change.
	per := int(o.duration.Seconds())*o.rate/o.tenants + 10
	ids := make([][]string, o.tenants)
	for i := range o.tenants {
		var seeded struct{ Records []struct{ Id string } }
		if err := call("POST", addrs.control+"/"+name(i)+"/seed", map[string]any{"contacts": per, "optedOutShare": 0}, &seeded); err != nil {
			return err
		}
		for _, r := range seeded.Records {
			ids[i] = append(ids[i], r.Id)
		}
		if len(ids[i]) < per {
			return fmt.Errorf("org %s: seeded %d records, want %d (the sandbox lists them only up to 1000: lower -duration or -rate)", name(i), len(ids[i]), per)
		}
	}

	// NATS: a namespace of our own, the tenants' settings (sync and CDC on).
	nc, err := nats.Connect(o.natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	prov, remove, err := harness.Namespace(ctx, nc, "cdcbench")
	if err != nil {
		return err
	}
	defer remove()
	settings := tenant.Store{KV: prov.Tenants}
	for i := range o.tenants {
		st := tenant.Default(name(i))
		st.SyncEnabled, st.CDCEnabled = true, true
		if err := settings.Put(ctx, st); err != nil {
			return err
		}
	}

	// The reconciler, as in production (its CDC subscriber streams every tenant).
	adminPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "NATS_URL="+o.natsURL, "OPTOUT_NAMESPACE="+prov.Topology.Namespace, "OPTOUT_NATS_STORAGE=memory",
		"OPTOUT_NATS_REPLICAS=1", fmt.Sprintf("OPTOUT_ADMIN_ADDR=127.0.0.1:%d", adminPort), "OPTOUT_REDIS_URL="+o.redisURL,
		"OPTOUT_LOCK_PREFIX=optout:"+prov.Topology.Namespace+":", "OPTOUT_PUBSUB_ADDR="+addrs.pubsub, "OPTOUT_PUBSUB_PLAINTEXT=true",
		"OPTOUT_RECONCILE_TICK=1s", "OPTOUT_SF_CREDENTIALS_DIR="+filepath.Join(dir, "none"), "OTEL_SDK_DISABLED=true", "LOG_LEVEL=warn")
	for i := range o.tenants {
		for k, v := range sfcreds.Env(name(i), addrs.orgs[name(i)], name(i)+"-key", name(i)+"-secret-Bx12") {
			env = append(env, k+"="+v)
		}
	}
	rc := &harness.Proc{Name: "reconciler", Bin: filepath.Join(dir, "reconciler"), Log: filepath.Join(dir, "reconciler.log"), Env: env}
	if err := rc.Start(); err != nil {
		return err
	}
	defer func() { _ = rc.Stop(30 * time.Second) }()
	store := runs.Store{KV: prov.Runs}
	fmt.Fprintln(os.Stderr, "bench: waiting for every tenant's stream")
	err = harness.Poll(ctx, 3*time.Minute, 200*time.Millisecond, 5*time.Second, func(ctx context.Context) error {
		for i := range o.tenants {
			c, err := store.CDC(ctx, name(i))
			if err != nil || c.State != runs.CDCStreaming || len(c.ReplayID) == 0 {
				return fmt.Errorf("tenant %s not streaming yet (%v, %q)", name(i), err, c.State)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w\nreconciler log:\n%s", err, rc.Tail(40))
	}
	for i := range o.tenants {
		if err := call("PUT", addrs.control+"/"+name(i)+"/latency", map[string]any{"latency": o.latency.String()}, nil); err != nil {
			return err
		}
	}

	// Applied events, timed on arrival.
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	dup := 0
	sub, err := nc.Subscribe(prov.Topology.AppliedSubject("*"), func(m *nats.Msg) {
		now := time.Now()
		ev := &optoutv1.OptOutEvent{}
		if proto.Unmarshal(m.Data, ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		k := ev.GetTenantId() + "/" + ev.GetPerson().GetSalesforceId() // orgs number their records alike
		t0, ok := sent[k]
		if !ok {
			dup++
			return
		}
		delete(sent, k)
		lat = append(lat, now.Sub(t0))
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Drive: open loop, tenants in turn.
	fmt.Fprintf(os.Stderr, "bench: %d edits a second over %d tenants for %s\n", o.rate, o.tenants, o.duration)
	load0 := harness.LoadAvg()
	pid := rc.Pid()
	cpu0, _ := harness.CPUTime(pid)
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	var wg sync.WaitGroup
	next := make([]int, o.tenants)
	n, errs := 0, 0
	var errMu sync.Mutex
	for time.Since(start) < o.duration {
		<-tick.C
		ti := n % o.tenants
		id := ids[ti][next[ti]]
		next[ti]++
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := name(ti) + "/" + id
			mu.Lock()
			sent[k] = time.Now()
			mu.Unlock()
			if err := call("PATCH", addrs.control+"/"+name(ti)+"/records/"+id, map[string]any{"HasOptedOutOfEmail": true}, nil); err != nil {
				errMu.Lock()
				errs++
				errMu.Unlock()
				mu.Lock()
				delete(sent, k)
				mu.Unlock()
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	editing := time.Since(start)
	// Stragglers: up to 30 s for the last applied events.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu1, _ := harness.CPUTime(pid)
	rss, _ := harness.StatusMiB(pid, "VmRSS")
	hwm, _ := harness.StatusMiB(pid, "VmHWM")
	load1 := harness.LoadAvg()
	mu.Lock()
	missing := len(sent)
	got := slices.Clone(lat)
	mu.Unlock()
	slices.Sort(got)
	return report(o, reportData{edits: n, errs: errs, missing: missing, dup: dup, lat: got, editing: editing,
		cpu: (cpu1 - cpu0).Seconds() / elapsed.Seconds(), rss: rss, hwm: hwm, load: load0 + " → " + load1})
}

type sandbox struct {
	control string            // http://…/_sandbox/orgs
	orgs    map[string]string // org → origin (token and instance URL)
	pubsub  string
}

var (
	reControl = regexp.MustCompile(`control API (http://\S+/_sandbox/orgs)`)
	reOrg     = regexp.MustCompile(`org (\S+)\s+token URL (http://\S+)/services/oauth2/token `)
	rePubSub  = regexp.MustCompile(`pubsub API (\S+) `)
)

// sandboxAddrs reads the addresses the sandbox prints at start.
func sandboxAddrs(p *harness.Proc, log string, orgs int) (sandbox, error) {
	s := sandbox{orgs: map[string]string{}}
	err := harness.Poll(context.Background(), time.Minute, 100*time.Millisecond, time.Second, func(context.Context) error {
		if p.Exited() != nil {
			return fmt.Errorf("sfsandbox exited: %s", p.Tail(20))
		}
		b, err := os.ReadFile(log)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			if m := reControl.FindStringSubmatch(line); m != nil {
				s.control = m[1]
			}
			if m := reOrg.FindStringSubmatch(line); m != nil {
				s.orgs[m[1]] = m[2]
			}
			if m := rePubSub.FindStringSubmatch(line); m != nil {
				s.pubsub = m[1]
			}
		}
		if s.control == "" || s.pubsub == "" || len(s.orgs) < orgs {
			return fmt.Errorf("sandbox addresses not printed yet")
		}
		return nil
	})
	return s, err
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

// call sends one control API request; out (when not nil) gets the JSON answer.
func call(method, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type reportData struct {
	edits, errs, missing, dup int
	lat                       []time.Duration
	editing                   time.Duration
	cpu, rss, hwm             float64
	load                      string
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

func report(o options, r reportData) error {
	verdict := "met"
	if p := pct(r.lat, 0.99); p > 2*time.Second || r.missing > 0 {
		verdict = "NOT met"
	}
	text := fmt.Sprintf(`# CDC: Salesforce edit → applied event

`+"`go run ./bench/cdc -tenants %d -rate %d -duration %s -latency %s`"+` (bench/cdc/main.go). The sandbox (one org per
tenant) and the reconciler (its CDC subscriber, wired as in production) each run as their own process,
NATS and Redis as given; a user's edit ticks the opt-out field of a fresh record through the sandbox's
control API, open loop, tenants in turn, and each applied event on `+"`optout.v1.applied.<tenant>`"+` is
timed from just before its edit was sent. Target (issue 22): p99 ≤ 2 s. **%s.**

| | |
|---|---|
| edits sent (failed) | %d (%d) over %s: %.0f a second |
| applied events timed / missing after 30 s / not ours | %d / %d / %d |
| latency p50 / p90 / p99 / max | %s / %s / %s / %s |
| reconciler CPU (share of one core, edits plus drain) | %.0f%% |
| reconciler RSS at the end / peak | %.0f MiB / %.0f MiB |
| machine load (1-minute average, start → end) | %s |

The machine's load shows in every figure (bench/README.md): the latency is mostly the subscriber's
batch (events of one tenant arrive in responses of up to 100) plus an event publish and a ledger
write per change; the sandbox's latency applies to REST data calls, which a change read from its event
does not make.
`, o.tenants, o.rate, o.duration, o.latency, verdict, r.edits, r.errs, r.editing.Round(time.Millisecond), float64(r.edits)/r.editing.Seconds(),
		len(r.lat), r.missing, r.dup, ms(pct(r.lat, 0.5)), ms(pct(r.lat, 0.9)), ms(pct(r.lat, 0.99)), ms(pct(r.lat, 1)),
		r.cpu*100, r.rss, r.hwm, r.load)
	fmt.Print(text)
	return os.WriteFile(o.out, []byte(text), 0o644)
}
