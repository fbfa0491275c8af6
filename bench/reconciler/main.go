// Command reconciler (make bench-reconciler) measures one reconcile of a large tenant against the
// Salesforce sandbox and the local NATS and Redis, for each read path
// (SOQL with queryMore, Bulk API 2.0), and writes a Markdown report.
//
//	go run ./bench/reconciler -out bench/reconciler.md
//
// The parent process seeds the sandbox (in process) and the ledger (in a
// fresh NATS namespace, torn down at the end); each run happens in a child
// process (this binary with -child), so its peak RSS is the reconciler's
// alone, not the sandbox's or the seeding's.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/runs"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

const benchTenant = "bench"

// lockPrefix is the Redis key prefix of one bench namespace's leases.
func lockPrefix(namespace string) string { return "reconbench:" + namespace + ":" }

type options struct {
	out      string
	persons  int
	share    float64
	disagree float64
	latency  time.Duration
	paths    string
	natsURL  string
	redis    string
	scale    int
}

func main() {
	var o options
	child := flag.Bool("child", false, "internal: run one reconcile (started by the parent)")
	flag.StringVar(&o.out, "out", "bench/reconciler.md", "report file")
	flag.IntVar(&o.persons, "persons", 2_000_000, "Contacts plus Leads in the org (half each)")
	flag.Float64Var(&o.share, "optout-share", 0.5, "share of persons opted out")
	flag.Float64Var(&o.disagree, "disagree", 0.01, "share of the opt-outs disagreeing in each direction")
	flag.DurationVar(&o.latency, "latency", 50*time.Millisecond, "sandbox latency added to every API call")
	flag.StringVar(&o.paths, "paths", "soql,bulk", "read paths to measure")
	flag.StringVar(&o.natsURL, "nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server")
	flag.StringVar(&o.redis, "redis", envOr("REDIS_ADDR", "127.0.0.1:6379"), "Redis server")
	flag.IntVar(&o.scale, "scale", 10, "also run the SOQL path at persons/scale to show how memory grows (0: skip)")
	flag.Parse()
	if *child {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-reconciler child:", err)
			os.Exit(1)
		}
		return
	}
	if err := runParent(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-reconciler:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// world is one seeded org and ledger.
type world struct {
	o        options
	persons  int
	sb       *sandbox.Sandbox
	srv      *httptest.Server
	org      *sandbox.Org
	nc       *nats.Conn
	prov     *natsx.Provisioned
	topo     natsx.Topology
	optedOut int               // Salesforce true-set
	scOnly   []sandbox.Record  // opted out in Sales Connect only
	sfOnly   []sandbox.Record  // opted out in Salesforce only (no ledger entry)
	entries  map[string][]byte // scOnly ledger entries as seeded, to reset between runs
	seedTime time.Duration
}

// result is one measured run.
type result struct {
	Path     string      `json:"path"`
	Persons  int         `json:"persons"`
	Report   runs.Report `json:"report"`
	PeakRSS  int64       `json:"peakRss"`  // bytes, the child's VmHWM
	HeapPeak uint64      `json:"heapPeak"` // bytes, sampled in the child
	Wall     time.Duration
	Verified string
}

func runParent(o options) error {
	var results []result
	var seeds []string
	sizes := []int{o.persons}
	if o.scale > 1 {
		sizes = append(sizes, o.persons/o.scale)
	}
	for i, n := range sizes {
		w, err := seed(o, n)
		if err != nil {
			if w != nil {
				w.close()
			}
			return err
		}
		seeds = append(seeds, fmt.Sprintf("%d persons: seeded in %s", n, w.seedTime.Round(time.Second)))
		paths := strings.Split(o.paths, ",")
		if i > 0 {
			paths = []string{"soql"} // the scaling point
		}
		for _, p := range paths {
			if err := w.reset(); err != nil {
				w.close()
				return err
			}
			// The audit stream copies every ledger write (seeding's and the
			// reset's) server-side; a run timed while that copy is still
			// going would measure the copy, not the reconciler.
			start := time.Now()
			actx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			err := ledger.WaitAudited(actx, w.prov.JS, w.topo)
			cancel()
			if err != nil {
				w.close()
				return fmt.Errorf("wait for the audit trail: %w", err)
			}
			fmt.Fprintf(os.Stderr, "audit trail caught up in %s\n", time.Since(start).Round(time.Second))
			r, err := w.run(p)
			if err != nil {
				w.close()
				return err
			}
			results = append(results, r)
			fmt.Fprintf(os.Stderr, "%s path, %d persons: %.1fs, %d API calls, peak RSS %d MiB (%s)\n",
				p, n, r.Report.DurationSeconds, r.Report.API.Spent, r.PeakRSS>>20, r.Verified)
		}
		w.close()
	}
	return writeReport(o, seeds, results)
}

// seed builds the org and the ledger: persons split between Contacts and
// Leads, share opted out; of the opt-outs, disagree are in Salesforce only
// and as many Salesforce non-opt-outs are opted out in Sales Connect only.
func seed(o options, persons int) (*world, error) {
	start := time.Now()
	w := &world{o: o, persons: persons, entries: map[string][]byte{}}
	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{{
		Name: benchTenant, ClientID: "bench-id", ClientSecret: "bench-secret", APIVersions: []string{"62.0"},
		DailyAPILimit: 5_000_000, // a full sandbox's allowance
		// Bulk results are streamed in 100,000-row pages.
	}}})
	if err != nil {
		return w, err
	}
	w.sb, w.org = sb, sb.Org(benchTenant)
	// The org on its own origin, as a real org's My Domain.
	w.srv = httptest.NewServer(sb.OrgHandler(benchTenant))
	w.org.Seed(sandbox.SeedSpec{Contacts: persons / 2, Leads: persons - persons/2, OptedOutShare: o.share})

	w.nc, err = nats.Connect(o.natsURL, nats.Name("reconbench"))
	if err != nil {
		return w, err
	}
	w.topo = natsx.DefaultTopology()
	w.topo.Namespace = fmt.Sprintf("bench%d", time.Now().UnixNano()%1_000_000)
	w.topo.Storage = jetstream.MemoryStorage
	w.topo.Replicas = 1
	ctx := context.Background()
	if w.prov, err = natsx.Provision(ctx, w.nc, w.topo); err != nil {
		return w, err
	}
	st := tenant.Default(benchTenant)
	st.SyncEnabled = true
	if err := (tenant.Store{KV: w.prov.Tenants}).Put(ctx, st); err != nil {
		return w, err
	}

	// Every 1/disagree-th opt-out is in Salesforce only; every
	// 1/disagree-th non-opt-out is in Sales Connect only.
	every := int(math.Round(1 / o.disagree))
	js, err := jetstream.New(w.nc, jetstream.WithPublishAsyncMaxPending(20000))
	if err != nil {
		return w, err
	}
	subject := "$KV." + w.topo.LedgerBucket() + "."
	decided := time.Now().Add(-30 * 24 * time.Hour).UTC()
	yes := true
	var nOpt, nNot, pending int
	publish := func(key string, e ledger.Entry) error {
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := js.PublishAsync(subject+key, data); err != nil {
			return err
		}
		pending++
		if pending%5000 == 0 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				return fmt.Errorf("ledger seeding stalled")
			}
		}
		return nil
	}
	for _, r := range w.org.Records() {
		sc := "sc-" + r.ID
		key := ledger.Key(benchTenant, sc, "")
		e := ledger.Entry{Tenant: benchTenant, SalesConnectID: sc, SalesforceID: r.ID, ObjectType: r.Type,
			OptedOut: true, DecidedAt: decided, DecidedBy: "evt-" + r.ID, Source: "EMAIL_LINK", Field: tenant.StandardField}
		if r.HasOptedOutOfEmail {
			w.optedOut++
			nOpt++
			if nOpt%every == 0 {
				w.sfOnly = append(w.sfOnly, r)
				continue
			}
			e.Confirmed, e.ConfirmedAt, e.SetByUs, e.State = &yes, decided, true, ledger.StateSynced
			e.Reason = "Salesforce confirmed the opt-out"
		} else {
			nNot++
			if nNot%every != 0 {
				continue
			}
			w.scOnly = append(w.scOnly, r)
			e.State, e.Reason = ledger.StatePending, "HasOptedOutOfEmail=true to be written"
			data, _ := json.Marshal(e)
			w.entries[key] = data
		}
		if err := publish(key, e); err != nil {
			return w, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return w, fmt.Errorf("ledger seeding did not complete")
	}
	runtime.GC()
	w.seedTime = time.Since(start)
	w.org.SetLatency(o.latency)
	return w, nil
}

// reset puts both sides back as seeded (what a previous run changed).
func (w *world) reset() error {
	ctx := context.Background()
	for _, r := range w.scOnly {
		w.org.Put(r)
		if _, err := w.prov.Ledger.Put(ctx, ledger.Key(benchTenant, "sc-"+r.ID, ""), w.entries[ledger.Key(benchTenant, "sc-"+r.ID, "")]); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, r := range w.sfOnly {
		if err := w.prov.Ledger.Purge(ctx, ledger.Key(benchTenant, "", r.ID)); err != nil {
			return err
		}
		// A new SystemModstamp makes new event ids: the previous run's are
		// still in JetStream's duplicate window.
		r.SystemModstamp = now
		w.org.Put(r)
	}
	s, err := w.prov.JS.Stream(ctx, w.topo.AppliedStream())
	if err != nil {
		return err
	}
	if err := s.Purge(ctx); err != nil {
		return err
	}
	w.org.SetAPIUsage(0)
	return nil
}

func (w *world) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The children's lease and fence keys.
	rdb := redis.NewClient(&redis.Options{Addr: w.o.redis})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, lockPrefix(w.topo.Namespace)+"*", 100).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	if w.nc != nil {
		_ = natsx.Teardown(ctx, w.nc, w.topo)
		w.nc.Close()
	}
	if w.srv != nil {
		w.srv.Close()
	}
}

// run measures one reconcile in a child process.
func (w *world) run(path string) (result, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(exe, "-child")
	cmd.Env = append(os.Environ(),
		"RB_NATS="+w.o.natsURL, "RB_NAMESPACE="+w.topo.Namespace, "RB_REDIS="+w.o.redis,
		"RB_SF_URL="+w.srv.URL, "RB_PATH="+path)
	if d := os.Getenv("RB_CHILD_GODEBUG"); d != "" {
		cmd.Env = append(cmd.Env, "GODEBUG="+d)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = io.Discard
	if os.Getenv("RB_VERBOSE") != "" {
		cmd.Stderr = os.Stderr
	}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("child (%s path): %w", path, err)
	}
	r := result{Path: path, Persons: w.persons, Wall: time.Since(start)}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("child output: %w: %s", err, stdout.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && r.PeakRSS == 0 {
		r.PeakRSS = ru.Maxrss * 1024 // KiB on Linux; includes the parent's set before exec
	}
	r.Verified = w.verify(r.Report)
	return r, nil
}

// verify checks the end state the run should have left.
func (w *world) verify(rep runs.Report) string {
	var problems []string
	if rep.Status != runs.StatusSucceeded {
		problems = append(problems, fmt.Sprintf("status %s (%s)", rep.Status, rep.Reason))
	}
	for _, r := range w.scOnly {
		if got, _ := w.org.Get(r.ID); !got.HasOptedOutOfEmail {
			problems = append(problems, "a Sales Connect-only opt-out was not written")
			break
		}
	}
	ctx := context.Background()
	for _, r := range w.sfOnly {
		if _, err := w.prov.Ledger.Get(ctx, ledger.Key(benchTenant, "", r.ID)); err != nil {
			problems = append(problems, "a Salesforce-only opt-out was not recorded")
			break
		}
	}
	c := rep.Counts
	if c.SalesConnectOnly != int64(len(w.scOnly)) || c.KnownToSalesforceOnly != int64(len(w.sfOnly)) ||
		c.SalesforceOptOuts != int64(w.optedOut) || rep.Writes.SalesforceWritten != int64(len(w.scOnly)) ||
		rep.Writes.EventsPublished != int64(len(w.sfOnly)) {
		problems = append(problems, fmt.Sprintf("counts %+v writes %+v", c, rep.Writes))
	}
	if len(problems) > 0 {
		return "FAILED: " + strings.Join(problems, "; ")
	}
	return "verified"
}

// minimumCalls is the fewest API calls the run could have made: every page
// of the opted-out sets (a Bulk job: create, one status poll, its result
// pages) plus one Collections call per 200 changes; the fixed overhead (one
// /limits and two describes) is listed apart.
func minimumCalls(w result, bulkPage int) (pages, writes int64) {
	c := w.Report.Counts
	// Contacts and Leads are read apart; split as seeded (half each).
	perObject := []int64{c.SalesforceOptOuts / 2, c.SalesforceOptOuts - c.SalesforceOptOuts/2}
	for _, n := range perObject {
		if w.Path == "bulk" {
			pages += 2 + max(1, (n+int64(bulkPage)-1)/int64(bulkPage))
		} else {
			pages += max(1, (n+1999)/2000)
		}
	}
	writes = (w.Report.Writes.PlannedSalesforce + 199) / 200
	return pages, writes
}

func writeReport(o options, seeds []string, results []result) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Reconciler benchmark\n\n")
	fmt.Fprintf(&b, "Command: `go run ./bench/reconciler -out %s -persons %d -latency %s` (Makefile: `make bench-reconciler`).\n\n",
		o.out, o.persons, o.latency)
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (%s/%s), %s; local nats-server (JetStream, memory storage for this namespace) and Redis; the Salesforce sandbox in the parent process with %s added to every API call.\n\n",
		host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.latency)
	fmt.Fprintf(&b, "One tenant: persons split evenly between Contacts and Leads, %.0f%% opted out in Salesforce (`HasOptedOutOfEmail`); the ledger holds those opt-outs except %.0f%% of them (opted out in Salesforce only, recorded by the run as `sf.<id>` entries and announced as applied events) plus as many persons opted out in Sales Connect only (written to Salesforce). Policy optout-wins. %s.\n\n",
		o.share*100, o.disagree*100, strings.Join(seeds, "; "))
	fmt.Fprintf(&b, "Each run is a separate process (the reconcile engine under a real Redis lease, as a replica runs it); peak RSS is that process's `VmHWM` (/proc/self/status), heap peak the largest Go heap in use sampled every 100 ms.\n\n")
	fmt.Fprintf(&b, "| path | persons | SF opt-outs | run duration | API calls spent | minimum (pages + writes) | fixed overhead | peak RSS | heap peak | end state |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range results {
		pages, writes := minimumCalls(r, 100000)
		a := r.Report.API
		other := a.Spent - a.Reads - a.Lookups - a.Writes
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f s | %d (reads %d, writes %d, lookups %d) | %d (%d + %d) | %d | %d MiB | %d MiB | %s |\n",
			r.Path, r.Persons, r.Report.Counts.SalesforceOptOuts, r.Report.DurationSeconds, a.Spent, a.Reads, a.Writes, a.Lookups,
			pages+writes, pages, writes, other, r.PeakRSS>>20, r.HeapPeak>>20, r.Verified)
	}
	fmt.Fprintf(&b, "\nCounts and writes of each run:\n\n| path | persons | in both | SC only → SF | SF only (known to SF only) | SF records written | ledger writes | events | pages read |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		c, wr := r.Report.Counts, r.Report.Writes
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d |\n", r.Path, r.Persons, c.InBoth, c.SalesConnectOnly,
			c.KnownToSalesforceOnly+c.SalesforceOnly, wr.SalesforceWritten, wr.LedgerWritten, wr.EventsPublished, r.Report.API.Pages)
	}
	// Memory per opt-out, from the two SOQL sizes.
	var soql []result
	for _, r := range results {
		if r.Path == "soql" {
			soql = append(soql, r)
		}
	}
	if len(soql) >= 2 {
		big, small := soql[0], soql[len(soql)-1]
		if d := big.Report.Counts.SalesforceOptOuts - small.Report.Counts.SalesforceOptOuts; d > 0 {
			fmt.Fprintf(&b, "\nPeak RSS grows by %.0f bytes per additional Salesforce opt-out between the two SOQL runs (%d → %d opt-outs, %d → %d MiB); "+
				"the set itself is 24 bytes a record; while it grows by append the old and new backing arrays briefly coexist, and the garbage collector lets the heap reach twice the live data (GOGC=100).\n",
				float64(big.PeakRSS-small.PeakRSS)/float64(d), small.Report.Counts.SalesforceOptOuts, big.Report.Counts.SalesforceOptOuts,
				small.PeakRSS>>20, big.PeakRSS>>20)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", notes)
	if err := os.MkdirAll(dirOf(o.out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(o.out, []byte(b.String()), 0o644)
}

const notes = `Notes:

- The minimum counts, per object, the SOQL pages of 2,000 records (or, for Bulk API 2.0, the job
  creation, one status poll and the 100,000-row result pages), plus one sObject Collections call per
  200 records to write. Spent calls above it are the extra Bulk status polls while the job runs (the
  sandbox moves a job one state per poll). The fixed overhead is GET /limits (the run's budget) and two
  describes (the field check), three calls whatever the size.
- Memory: the reconciler holds the Salesforce opted-out set as 24 bytes a record (a packed 12-byte id
  and the SystemModstamp) plus the planned changes; the ledger is streamed. Compare the two sizes: the
  growth of the peak follows the opted-out set, the rest is the Go runtime, the NATS and HTTP clients
  and JSON/CSV decoding buffers.
- The ledger side is streamed with an ordered pull consumer over the tenant's keys (last value per
  key, at most 5,000 entries buffered), each entry decoded and classified at once; with the
  Salesforce read it is one of the two long phases (the writes take the rest).
- Phases are sequential: both Salesforce objects are read concurrently (queryMore pages of one
  object are necessarily sequential), then the ledger, then the writes.`

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}
