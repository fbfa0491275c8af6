package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/optout-sync/optout-sync/shared/natsx"
)

// profileSeconds is the length of the CPU profiles taken during the burst.
const profileSeconds = 8

// runMain measures the raw rates, the trickle (b) with the pusher's steady
// memory (c), then the burst (a) with its peak memory (c), CPU per process,
// round trips and profiles (e), on one server, sandbox and pusher.
func runMain(ctx context.Context, o Options, dir, cli string, rep *report) error {
	burst := make([]string, o.Tenants)
	for i := range burst {
		burst[i] = fmt.Sprintf("burst%02d", i)
	}
	tenants := append(append([]string{}, burst...), emailTenant, salesTenant, loneTenant)
	// One burst tenant writes the sales field (a check read precedes its
	// writes), as one of the two trickle tenants does.
	sales := map[string]bool{burst[0]: true, salesTenant: true}
	e, err := start(ctx, o, filepath.Join(dir, "main"), tenants, sales)
	if err != nil {
		return err
	}
	defer e.close()
	rep.server = e.nats.version
	rep.loadBefore = loadAvg()

	// The raw rates first, on the fresh server, at our message's size.
	msg, _, err := eventMsg(natsx.DefaultTopology(), PubItem{Tenant: burst[0], ID: "003000000000000AAA", Type: "Contact"}, 0)
	if err != nil {
		return err
	}
	rep.msgSize = len(msg.Data)
	rep.raw, rep.rawErr = natsBench(ctx, cli, e.nats.url, 100_000, rep.msgSize)
	if !o.SyncAlways {
		rep.syncAlwaysPub = syncAlwaysRate(ctx, o, dir, cli, rep.msgSize)
	}

	// Records: one per burst opt-out plus one warm-up per tenant.
	var warm, burstItems, emailItems, salesItems, loneItems []PubItem
	per := o.Total / o.Tenants
	trickleN := o.TrickleRate * int(o.TrickleDuration.Seconds())
	for _, t := range tenants {
		n := per
		switch t {
		case emailTenant, salesTenant:
			n = trickleN
		case loneTenant:
			n = 1
		}
		recs, err := e.sb.seed(ctx, t, n+1)
		if err != nil {
			return err
		}
		if err := e.sb.setLatency(ctx, t, o.Latency); err != nil {
			return err
		}
		warm = append(warm, items(t, recs[:1])...)
		switch t {
		case emailTenant:
			emailItems = items(t, recs[1:])
		case salesTenant:
			salesItems = items(t, recs[1:])
		case loneTenant:
			loneItems = items(t, recs[1:])
		default:
			burstItems = append(burstItems, items(t, recs[1:])...)
		}
	}
	if err := e.warm(ctx, warm); err != nil {
		return err
	}
	pid := e.pusher.Pid()
	rep.rssIdle, _ = memKB(pid)

	// (b) Trickle, each trickle tenant at its rate, both at once.
	w, err := watchConfirms(ctx, e.prov.Ledger, []string{emailTenant + ".>", salesTenant + ".>"})
	if err != nil {
		return err
	}
	before, err := e.metrics(ctx)
	if err != nil {
		return err
	}
	rs := sampleRSS(pid)
	if _, _, err := e.publish(ctx, "trickle", interleave(emailItems, salesItems), float64(2*o.TrickleRate)); err != nil {
		w.stop()
		return err
	}
	err = waitFor(ctx, func() bool { return w.count() >= len(emailItems)+len(salesItems) }, time.Minute,
		func() string {
			return fmt.Sprintf("%d of %d trickle opt-outs confirmed", w.count(), len(emailItems)+len(salesItems))
		})
	w.stop()
	if err != nil {
		return err
	}
	after, err := e.metrics(ctx)
	if err != nil {
		return err
	}
	// The raw scrape stays in the run directory (-keep) for a closer look.
	_ = fetchTo(ctx, e.admin+"/metrics", filepath.Join(e.dir, "metrics-after-trickle.txt"))
	rep.rssSteadyPeak, rep.rssSteadyMean, _ = rs.stop()
	all := time.Unix(1<<40, 0)
	rep.trickleEmail = w.between([]string{emailTenant}, time.Time{}, all)
	rep.trickleSales = w.between([]string{salesTenant}, time.Time{}, all)
	rep.stages = stageDiff(before, after)

	// (a) Burst: every burst opt-out published at once.
	var callsBefore callCounts
	for _, t := range burst {
		c, err := e.sb.calls(ctx, t)
		if err != nil {
			return err
		}
		callsBefore.add(c)
	}
	connBefore, err := e.nats.connz(ctx)
	if err != nil {
		return err
	}
	dirtyBefore, err := e.dirtyStored(ctx)
	if err != nil {
		return err
	}
	cpu := startCPU(map[string]int{"nats-server": e.nats.Pid(), "pusher": pid, "sfsandbox": e.sb.Pid(), "bench (this process)": os.Getpid()})
	rs = sampleRSS(pid)
	pusherProf := filepath.Join(e.dir, "pusher.cpu.pprof")
	serverProf := filepath.Join(e.dir, "nats-server.cpu.pprof")
	pprofPusher := profile(ctx, e.admin, pusherProf, profileSeconds)
	pprofServer := profile(ctx, e.nats.prof, serverProf, profileSeconds)
	pushed0, err := pushedTotal(ctx, e)
	if err != nil {
		return err
	}
	res, pubCPU, err := e.publish(ctx, "burst", burstItems, 0)
	if err != nil {
		return err
	}
	rep.burstPublish = res
	if _, _, err := e.publish(ctx, "lone", loneItems, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Minute)
	// Polled twice a second: the drain's end comes from the ledger itself
	// (scanConfirmed), and a scrape costs the pusher CPU.
	for {
		n, err := pushedTotal(ctx, e)
		if err != nil {
			return err
		}
		if n-pushed0 >= float64(len(burstItems)+len(loneItems)) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("burst did not drain: %.0f of %d pushed", n-pushed0, len(burstItems))
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.cpu = cpu.end([]string{"nats-server", "pusher", "sfsandbox", "bench (this process)"})
	rep.cpu = append(rep.cpu, cpuUse{Name: "publisher", CPU: pubCPU, Cores: pubCPU.Seconds() / time.Since(cpu.start).Seconds()})
	rep.cpuWall = time.Since(cpu.start)
	rep.rssBurstPeak, _, _ = rs.stop()
	_, rep.rssHWM = memKB(pid)
	connAfter, err := e.nats.connz(ctx)
	if err != nil {
		return err
	}
	dirtyAfter, err := e.dirtyStored(ctx)
	if err != nil {
		return err
	}
	rep.dirtyWrites = dirtyAfter - dirtyBefore
	rep.pusherMsgs = connAfter["optout-pusher"].In - connBefore["optout-pusher"].In
	rep.pusherMsgsOut = connAfter["optout-pusher"].Out - connBefore["optout-pusher"].Out
	var callsAfter callCounts
	for _, t := range burst {
		c, err := e.sb.calls(ctx, t)
		if err != nil {
			return err
		}
		callsAfter.add(c)
	}
	rep.burstCalls = callCounts{Writes: callsAfter.Writes - callsBefore.Writes, Reads: callsAfter.Reads - callsBefore.Reads, API: callsAfter.API - callsBefore.API}
	lat, last, n, err := scanConfirmed(ctx, e.ledger, burst)
	if err != nil {
		return err
	}
	// The warm-up opt-outs are confirmed too, earlier: count only the burst's.
	rep.burstN = len(burstItems)
	rep.burstConfirmed = n - o.Tenants
	rep.burstLat = lat
	rep.drain = last.Sub(res.Start)
	if rep.lone, err = confirmedAfter(ctx, e.ledger, loneTenant, loneItems[0].ID); err != nil {
		return err
	}
	if err := <-pprofPusher; err == nil {
		rep.pusherTop = pprofTop(ctx, pusherProf, 30, "-cum")
	} else {
		rep.pusherTop = "profile failed: " + err.Error()
	}
	if err := <-pprofServer; err == nil {
		rep.serverTop = pprofTop(ctx, serverProf, 20, "-cum")
	} else {
		rep.serverTop = "profile failed: " + err.Error()
	}

	// (e) The design floor, on the same server, once the burst is done.
	size, err := entrySize(ctx, e, burstItems[0])
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	for _, audit := range []bool{true, false} {
		syscall.Sync()
		rep.floors = append(rep.floors, runFloor(ctx, e, burstItems, size, audit))
	}
	return nil
}

func pushedTotal(ctx context.Context, e *env) (float64, error) {
	mf, err := e.metrics(ctx)
	if err != nil {
		return 0, err
	}
	return counterSum(mf, "optout_pushed_total"), nil
}

// runIsolation (d): n tenants at one opt-out a second each, first
// all at the normal latency, then with one tenant's Salesforce at
// SlowLatency a call; every other tenant's latencies in both phases.
func runIsolation(ctx context.Context, o Options, dir string, n int, res *isoResult) error {
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("iso%04d", i)
	}
	slow, others := tenants[0], tenants[1:]
	e, err := start(ctx, o, filepath.Join(dir, fmt.Sprintf("iso%d", n)), tenants, nil)
	if err != nil {
		return err
	}
	defer e.close()
	// Segments: half a phase without the slow tenant, a whole phase with
	// it, half a phase without again. Pooling the two halves cancels a
	// drift of the (shared) machine's load, which otherwise decides a p99
	// ratio as much as the slow tenant does.
	half := max(1, int(o.IsoDuration.Seconds())/2)
	segs := []struct {
		slow bool
		secs int
	}{{false, half}, {true, 2 * half}, {false, half}}
	perTenant := 0
	for _, sg := range segs {
		perTenant += sg.secs
	}
	var mu sync.Mutex
	warm := make([]PubItem, 0, len(tenants))
	lists := make([][][]PubItem, len(segs))
	for i := range lists {
		lists[i] = make([][]PubItem, len(tenants))
	}
	// Eight at a time: a thousand orgs to seed through the control API.
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(tenants))
	var wg sync.WaitGroup
	for i, t := range tenants {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			recs, err := e.sb.seed(ctx, t, perTenant+1)
			if err == nil {
				err = e.sb.setLatency(ctx, t, o.Latency)
			}
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			warm = append(warm, items(t, recs[:1])...)
			next := 1
			for k, sg := range segs {
				lists[k][i] = items(t, recs[next:next+sg.secs])
				next += sg.secs
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := e.warm(ctx, warm); err != nil {
		return err
	}
	w, err := watchConfirms(ctx, e.prov.Ledger, []string{">"})
	if err != nil {
		return err
	}
	defer w.stop()
	pid := e.pusher.Pid()
	rs := sampleRSS(pid)
	cpu := startCPU(map[string]int{"nats-server": e.nats.Pid(), "pusher": pid, "sfsandbox": e.sb.Pid()})
	rate := float64(len(tenants)) // one a second each
	starts := make([]time.Time, len(segs)+1)
	for k, sg := range segs {
		latency := o.Latency
		if sg.slow {
			latency = o.SlowLatency
		}
		if err := e.sb.setLatency(ctx, slow, latency); err != nil {
			return err
		}
		starts[k] = time.Now()
		if k == 0 {
			// Where many trickling tenants' CPU goes: both busy processes.
			pp := filepath.Join(e.dir, "pusher.iso.cpu.pprof")
			sp := filepath.Join(e.dir, "nats-server.iso.cpu.pprof")
			profP, profS := profile(ctx, e.admin, pp, profileSeconds), profile(ctx, e.nats.prof, sp, profileSeconds)
			defer func() {
				if <-profP == nil {
					res.pusherTop = pprofTop(ctx, pp, 25, "-cum")
				}
				if <-profS == nil {
					res.serverTop = pprofTop(ctx, sp, 25, "-cum")
				}
			}()
		}
		list := interleave(lists[k]...)
		if _, _, err := e.publish(ctx, fmt.Sprintf("iso-segment%d", k), list, rate); err != nil {
			return err
		}
		// Every other tenant's opt-outs of the segment confirmed (the slow
		// tenant's may still be on their way).
		want := len(list) - sg.secs
		from := starts[k]
		if err := waitFor(ctx, func() bool { return len(w.between(others, from, time.Now())) >= want }, 3*time.Minute,
			func() string {
				return fmt.Sprintf("%d of %d opt-outs confirmed", len(w.between(others, from, time.Now())), want)
			}); err != nil {
			return err
		}
	}
	starts[len(segs)] = time.Now()
	res.cpu = cpu.end([]string{"nats-server", "pusher", "sfsandbox"})
	res.rssPeak, _, _ = rs.stop()
	// What a thousand tenants cost the pusher: goroutines and the heap.
	res.goroutines = goroutines(ctx, e.admin, filepath.Join(e.dir, "pusher.goroutines.txt"))
	heap := filepath.Join(e.dir, "pusher.heap.pprof")
	if err := fetchTo(ctx, e.admin+"/debug/pprof/heap", heap); err == nil {
		res.heapTop = pprofTop(ctx, heap, 15, "-sample_index=inuse_space")
	}
	res.tenants = len(tenants)
	res.base = append(w.between(others, starts[0], starts[1]), w.between(others, starts[2], starts[3])...)
	res.slow = w.between(others, starts[1], starts[2])
	res.slowOwn = w.between([]string{slow}, starts[1], starts[3])
	// Every sample, by segment, for a closer look (-keep).
	var csv strings.Builder
	csv.WriteString("segment,decided_unix_ms,latency_ms\n")
	for k := range segs {
		for _, smp := range w.samplesBetween(others, starts[k], starts[k+1]) {
			fmt.Fprintf(&csv, "%d,%d,%.1f\n", k, smp.decided.UnixMilli(), float64(smp.latency)/1e6)
		}
	}
	_ = os.WriteFile(filepath.Join(e.dir, "latencies.csv"), []byte(csv.String()), 0o644)
	return nil
}

// loadAvg is the machine's 1-minute load average before the run: the
// machine may be shared, and a busy one shows in every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	var one string
	fmt.Sscan(string(b), &one)
	return one
}

// goroutines is the pusher's goroutine count (0 when unknown); the
// profile stays at path.
func goroutines(ctx context.Context, admin, path string) int {
	if fetchTo(ctx, admin+"/debug/pprof/goroutine?debug=1", path) != nil {
		return 0
	}
	b, _ := os.ReadFile(path)
	var n int
	fmt.Sscanf(string(b), "goroutine profile: total %d", &n)
	return n
}

// syncAlwaysRate is the async publish rate of a server that fsyncs every
// write (sync_interval: always, deploy/README.md's advice), on this
// machine's disk: the bound every figure would have under that setting.
func syncAlwaysRate(ctx context.Context, o Options, dir, cli string, size int) float64 {
	d := filepath.Join(dir, "sync-always")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return 0
	}
	n, err := startNATS(ctx, filepath.Join(o.Bin, "nats-server"), d, true)
	if err != nil {
		return 0
	}
	defer func() { _ = n.Stop(10 * time.Second) }()
	out, err := exec.CommandContext(ctx, cli, "--server", n.url, "bench", "js", "pub", "async", "optout.bench.sync",
		"--create", "--storage", "file", "--stream", "optout_bench_sync", "--msgs", "5000", "--size", strconv.Itoa(size), "--no-progress").CombinedOutput()
	if err != nil {
		return 0
	}
	return benchRate(string(out))
}

// dirtyStored is how many messages the dirty set's stream has stored so
// far (marker puts and deletes alike).
func (e *env) dirtyStored(ctx context.Context) (uint64, error) {
	name := "KV_" + e.prov.Topology.DirtyBucket()
	s, err := e.prov.JS.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", name, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}
