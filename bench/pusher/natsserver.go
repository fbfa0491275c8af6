package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/internal/harness"
)

// natsProc is a nats-server of the bench's own: its port, its store
// directory, file storage, the monitoring port for /connz and a profiling
// port.
type natsProc struct {
	*harness.Proc
	url, monitor, prof string
	version            string
}

func startNATS(ctx context.Context, bin, dir string, syncAlways bool) (*natsProc, error) {
	ports := make([]int, 3)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	store := filepath.Join(dir, "jetstream")
	sync := ""
	if syncAlways {
		sync = "\n  sync_interval: always"
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nprof_port: %d\nmax_payload: 8MB\njetstream {\n  store_dir: %q%s\n}\n",
		ports[0], ports[1], ports[2], store, sync)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc("nats-server", dir, bin, []string{"-c", path}, nil)
	if err != nil {
		return nil, err
	}
	n := &natsProc{Proc: p, url: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]),
		monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), prof: fmt.Sprintf("http://127.0.0.1:%d", ports[2])}
	if err := harness.WaitHTTP(ctx, p, n.monitor+"/healthz?js-enabled-only=true", 30*time.Second); err != nil {
		_ = p.Stop(time.Second)
		return nil, err
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := getJSON(ctx, n.monitor+"/varz", &v); err == nil {
		n.version = v.Version
	}
	return n, nil
}

func getJSON(ctx context.Context, url string, out any) error {
	body, err := get(ctx, url)
	if err != nil {
		return err
	}
	defer body.Close()
	return json.NewDecoder(body).Decode(out)
}

// get answers url's body, or an error for anything but 200 OK.
func get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// connMsgs is what one client connection has sent the server (in_msgs:
// publishes, requests and acks) and received, by connection name.
type connMsgs struct{ In, Out int64 }

func (n *natsProc) connz(ctx context.Context) (map[string]connMsgs, error) {
	var z struct {
		Connections []struct {
			Name    string `json:"name"`
			InMsgs  int64  `json:"in_msgs"`
			OutMsgs int64  `json:"out_msgs"`
		} `json:"connections"`
	}
	out := map[string]connMsgs{}
	for _, state := range []string{"open", "closed"} {
		if err := getJSON(ctx, n.monitor+"/connz?limit=10000&state="+state, &z); err != nil {
			return nil, err
		}
		for _, c := range z.Connections {
			m := out[c.Name]
			m.In += c.InMsgs
			m.Out += c.OutMsgs
			out[c.Name] = m
		}
	}
	return out, nil
}

// rawRates is what `nats bench` measured on the bench's server.
type rawRates struct {
	output                     string
	pub, consume, kvPut, kvGet float64
	// pubRuns and consumeRuns are every round's rates: pub and consume are
	// their medians, since one round on a shared machine can be off by half.
	pubRuns, consumeRuns []float64
}

// rawRounds is how many times the publish and consume rates are measured.
const rawRounds = 3

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

var rateRe = regexp.MustCompile(`([0-9,]+) msgs/sec`)

// benchRate is the rate nats bench reports: the aggregated one with
// several clients, else its one stats line.
func benchRate(s string) float64 {
	line := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "aggregated stats:") || (line == "" && strings.Contains(l, "stats:")) {
			line = l
		}
	}
	m := rateRe.FindStringSubmatch(line)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	return v
}

// natsCLI finds the pinned nats CLI, installing it when it is missing.
func natsCLI(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("nats"); err == nil {
		if out, err := exec.CommandContext(ctx, p, "--version").Output(); err == nil && strings.TrimSpace(string(out)) == natsCLIVersion {
			return p, nil
		}
	}
	gobin, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err != nil {
		return "", err
	}
	p := filepath.Join(strings.TrimSpace(string(gobin)), "bin", "nats")
	if out, err := exec.CommandContext(ctx, p, "--version").Output(); err == nil && strings.TrimSpace(string(out)) == natsCLIVersion {
		return p, nil
	}
	if out, err := exec.CommandContext(ctx, "go", "install", "github.com/nats-io/natscli/nats@"+natsCLIVersion).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install natscli: %v: %s", err, out)
	}
	return p, nil
}

const natsCLIVersion = "v0.5.0"

// natsBench measures the server's raw JetStream rates at the pipeline's
// message size: an async publish of msgs into a file-storage stream, then a
// durable consumer (callback, explicit acks) reading them back: the "raw
// consume rate" the pusher is held against. KV puts and gets with 16
// clients show what the ledger's round trips can reach.
func natsBench(ctx context.Context, cli, url string, msgs, size int) (rawRates, error) {
	var out rawRates
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, cli, append([]string{"--server", url}, args...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	const stream = "optout_bench_raw"
	n := strconv.Itoa(msgs)
	sz := strconv.Itoa(size)
	type step struct {
		args []string
		rate *float64
	}
	// Each round publishes afresh (--purge), so each consume reads n.
	pubs, consumes := make([]float64, rawRounds), make([]float64, rawRounds)
	var steps []step
	for i := range rawRounds {
		steps = append(steps,
			step{[]string{"bench", "js", "pub", "async", "optout.bench.raw", "--create", "--storage", "file", "--purge", "--stream", stream, "--msgs", n, "--size", sz, "--no-progress"}, &pubs[i]},
			step{[]string{"bench", "js", "consume", "--stream", stream, "--msgs", n, "--size", sz, "--no-progress"}, &consumes[i]})
	}
	steps = append(steps, []step{
		{[]string{"kv", "add", "optout_bench_kv", "--storage", "file", "--history", "1"}, nil},
		{[]string{"bench", "kv", "put", "--bucket", "optout_bench_kv", "--storage", "file", "--clients", "16", "--msgs", "40000", "--size", "1000", "--no-progress"}, &out.kvPut},
		{[]string{"bench", "kv", "get", "--bucket", "optout_bench_kv", "--clients", "16", "--msgs", "40000", "--size", "1000", "--no-progress"}, &out.kvGet},
	}...)
	var firstErr error
	for _, s := range steps {
		o, err := run(s.args...)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("nats %s: %w: %s", strings.Join(s.args[:3], " "), err, o)
		}
		if s.rate == nil {
			continue
		}
		out.output += "$ nats " + strings.Join(s.args, " ") + "\n" + keepStats(o) + "\n"
		*s.rate = benchRate(o)
	}
	_, _ = run("stream", "rm", "-f", stream)
	_, _ = run("kv", "del", "-f", "optout_bench_kv")
	out.pubRuns, out.consumeRuns = pubs, consumes
	out.pub, out.consume = median(pubs), median(consumes)
	return out, firstErr
}

// keepStats drops nats bench's progress chatter, keeping its parameters
// and results.
func keepStats(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if (strings.Contains(l, "stats:") && !strings.Contains(l, "]")) || (strings.Contains(l, "Starting") && !strings.Contains(l, "] Starting")) || strings.Contains(l, "rror") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return strings.Join(keep, "\n")
}
