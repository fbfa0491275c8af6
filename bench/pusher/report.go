package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// report gathers every figure of a run and renders bench/pusher.md.
type report struct {
	opts       Options
	started    time.Time
	took       time.Duration
	server     string
	loadBefore string

	msgSize       int
	raw           rawRates
	rawErr        error
	syncAlwaysPub float64

	// (b)
	trickleEmail, trickleSales []time.Duration
	stages                     map[string]hist // "stage/target"

	// (a)
	burstN, burstConfirmed int
	burstPublish           PublishResult
	drain                  time.Duration
	burstLat               []time.Duration
	// lone: publish-to-confirmed of another tenant's opt-out published
	// as the burst's publish ended.
	lone       time.Duration
	burstCalls callCounts
	// dirtyWrites: messages the dirty set stored during the burst.
	dirtyWrites uint64

	// (c)
	rssIdle, rssSteadyPeak, rssSteadyMean, rssBurstPeak, rssHWM int64

	// (e)
	cpu                       []cpuUse
	cpuWall                   time.Duration
	pusherMsgs, pusherMsgsOut int64
	pusherTop, serverTop      string
	floors                    []floorResult // with the audit stream, then without

	// (d): the thousand tenants, then a size below this machine's
	// saturation, where the ratio shows the isolation itself.
	iso []*isoResult
}

// isoResult is one slow-tenant run.
type isoResult struct {
	tenants              int
	base, slow, slowOwn  []time.Duration
	cpu                  []cpuUse
	err                  error
	goroutines           int
	heapTop              string
	pusherTop, serverTop string
	rssPeak              int64
}

// ratio is the other tenants' p99 with the slow tenant over without.
func (i *isoResult) ratio() (float64, time.Duration, time.Duration) {
	_, base99 := Percentiles(i.base)
	_, slow99 := Percentiles(i.slow)
	return float64(slow99) / float64(max(base99, 1)), base99, slow99
}

// saturated says the machine could not keep up with the trickle at all:
// then every tenant waits on the backlog and the ratio measures nothing.
func (i *isoResult) saturated(latency time.Duration) bool {
	_, base99 := Percentiles(i.base)
	return base99 > 10*latency
}

// stageDiff is what each stage histogram gained between two scrapes.
func stageDiff(before, after map[string]*dto.MetricFamily) map[string]hist {
	out := map[string]hist{}
	b := stageHists(before)
	for k, h := range stageHists(after) {
		out[k] = h.minus(b[k])
	}
	return out
}

func stageHists(mf map[string]*dto.MetricFamily) map[string]hist {
	out := map[string]hist{}
	f := mf["optout_push_stage_seconds"]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var stage, target string
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "stage":
				stage = lp.GetValue()
			case "target":
				target = lp.GetValue()
			}
		}
		one := map[string]*dto.MetricFamily{"x": {Metric: []*dto.Metric{m}}}
		h := histograms(one, "x", "")[""]
		k := stage + "/" + target
		if cur, ok := out[k]; ok {
			for i := range cur.counts {
				cur.counts[i] += h.counts[i]
			}
			cur.sum += h.sum
			cur.count += h.count
			out[k] = cur
		} else {
			out[k] = h
		}
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**MISS**"
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

const (
	targetDrainShare = 0.2
	targetCalls      = 0.0052
	targetEmailP99   = 150 * time.Millisecond
	targetSalesP99   = 250 * time.Millisecond
	targetRSSSteady  = 64 * 1024 // kB
	targetRSSBurst   = 128 * 1024
	targetIsolation  = 1.2
)

func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	rate := float64(r.burstN) / r.drain.Seconds()
	share := rate / max(r.raw.consume, 1)
	calls := float64(r.burstCalls.Writes) / float64(max(r.burstN, 1))
	_, e99 := Percentiles(r.trickleEmail)
	e50, _ := Percentiles(r.trickleEmail)
	s50, s99 := Percentiles(r.trickleSales)
	sync := "default `sync_interval` (2 min)"
	if o.SyncAlways {
		sync = "`sync_interval: always`"
	}

	fmt.Fprintf(&b, "# Pusher benchmark\n\n")
	fmt.Fprintf(&b, "Run %s on %d CPUs (%s), load average %s before the run and %s after (the machine is shared: other work "+
		"competes for the same cores, so figures vary from run to run); took %s. "+
		"Command: `make bench-pusher`.\n\n",
		r.started.UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.GOARCH, r.loadBefore, loadAvg(), r.took.Round(time.Second))
	fmt.Fprintf(&b, "Each part is its own process on 127.0.0.1: nats-server %s started by the bench (own port and store, file storage, %s), "+
		"the pusher binary (`bin/pusher`, production defaults%s), the Salesforce sandbox binary (`bin/sfsandbox`, %s a call), "+
		"and a publisher process publishing with `PublishMsgAsync` (at most %d unacknowledged). Opt-out events are the production "+
		"contract (protobuf, %d bytes, Nats-Msg-Id, traceparent); `nats bench` measures the same server in the same run at that size.\n\n",
		r.server, sync, envNote(o.PusherEnv), o.Latency, maxPending, r.msgSize)

	if r.syncAlwaysPub > 0 {
		fmt.Fprintf(&b, "The server runs with the default `sync_interval`: with `sync_interval: always` (fsync per write, as deploy/README.md "+
			"advises for production) the same nats-server on this machine's disk took %.0f async publishes/s (`nats bench js pub async`, 5,000 "+
			"messages, measured in this run), so every figure here would be the disk's; `-sync-always` runs the bench that way.\n\n", r.syncAlwaysPub)
	}
	fmt.Fprintf(&b, "## Targets (issue 12)\n\n| | target | measured | |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| (a) burst drain rate ÷ raw consume rate | ≥ %.1f | %.3f (%.0f/s ÷ %.0f msgs/s) | %s |\n", targetDrainShare, share, rate, r.raw.consume, verdict(share >= targetDrainShare))
	for _, f := range r.floors {
		if f.err == nil && f.n > 0 {
			fmt.Fprintf(&b, "| (a) for scale, the design floor%s ÷ raw consume rate: the ledger's broker writes alone, see (e) | | %.3f (%.0f/s ÷ %.0f msgs/s) | |\n",
				f.label(), f.rate()/max(r.raw.consume, 1), f.rate(), r.raw.consume)
		}
	}
	fmt.Fprintf(&b, "| (a) Salesforce write calls per opt-out | ≤ %.4f | %.4f (%d writes for %d) | %s |\n", targetCalls, calls, r.burstCalls.Writes, r.burstN, verdict(calls <= targetCalls))
	fmt.Fprintf(&b, "| (b) trickle p99, Email Opt Out | ≤ %s | %s | %s |\n", ms(targetEmailP99), ms(e99), verdict(len(r.trickleEmail) > 0 && e99 <= targetEmailP99))
	fmt.Fprintf(&b, "| (b) trickle p99, sales field | ≤ %s | %s | %s |\n", ms(targetSalesP99), ms(s99), verdict(len(r.trickleSales) > 0 && s99 <= targetSalesP99))
	fmt.Fprintf(&b, "| (c) pusher RSS, steady (trickle peak) | ≤ 64 MB | %s | %s |\n", mb(r.rssSteadyPeak), verdict(r.rssSteadyPeak <= targetRSSSteady))
	fmt.Fprintf(&b, "| (c) pusher RSS, burst (peak VmHWM) | ≤ 128 MB | %s | %s |\n", mb(max(r.rssBurstPeak, r.rssHWM)), verdict(max(r.rssBurstPeak, r.rssHWM) <= targetRSSBurst))
	for _, i := range r.iso {
		ratio, base99, slow99 := i.ratio()
		note, ok := "", i.err == nil && len(i.slow) > 0 && ratio <= targetIsolation
		if i.saturated(o.Latency) {
			// Whatever the ratio, a saturated baseline proves nothing.
			note, ok = "; **saturated**: the baseline's p99 is far above Salesforce's latency, see (d)", false
		}
		fmt.Fprintf(&b, "| (d) %d tenants: other tenants' p99 with a slow tenant ÷ without | ≤ %.1f | %.2f (%s ÷ %s)%s | %s |\n",
			i.tenants, targetIsolation, ratio, ms(slow99), ms(base99), note, verdict(ok))
	}
	b.WriteString("\n")

	fmt.Fprintf(&b, "## (a) Burst: %d opt-outs over %d tenants, published at once\n\n", r.burstN, o.Tenants)
	p50, p99 := Percentiles(r.burstLat)
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| publish (async): all sent / all acknowledged | %s / %s (%.0f/s) |\n", r.burstPublish.Sent.Round(time.Millisecond), r.burstPublish.Acked.Round(time.Millisecond), float64(r.burstPublish.Published)/r.burstPublish.Acked.Seconds())
	fmt.Fprintf(&b, "| drain: first publish to last confirmation in the ledger | %s |\n", r.drain.Round(time.Millisecond))
	fmt.Fprintf(&b, "| drain rate | %.0f opt-outs/s |\n", rate)
	fmt.Fprintf(&b, "| raw consume rate (`nats bench js consume`, same server; median of %d rounds: %s) | %.0f msgs/s |\n", len(r.raw.consumeRuns), rates(r.raw.consumeRuns), r.raw.consume)
	fmt.Fprintf(&b, "| confirmed in the ledger | %d of %d |\n", r.burstConfirmed, r.burstN)
	fmt.Fprintf(&b, "| Salesforce write calls (Collections updates; the sales field's composites) | %d (%.4f per opt-out; at least %d) |\n", r.burstCalls.Writes, calls, (r.burstN+199)/200)
	fmt.Fprintf(&b, "| Salesforce reads outside a write (collections retrieves: converted Leads) / all API calls | %d / %d |\n", r.burstCalls.Reads, r.burstCalls.API)
	fmt.Fprintf(&b, "| dirty-set writes (marker puts and deletes) | %d (%.3f per opt-out) |\n", r.dirtyWrites, float64(r.dirtyWrites)/float64(max(r.burstN, 1)))
	fmt.Fprintf(&b, "| publish-to-confirmed p50 / p99 | %s / %s |\n", p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	fmt.Fprintf(&b, "| another tenant's lone opt-out, published as the burst's publish ended: publish-to-confirmed | %s |\n\n", r.lone.Round(time.Millisecond))
	b.WriteString(headOfLine)

	fmt.Fprintf(&b, "## (b) Trickle: %d opt-outs a second on each of two tenants for %s, Salesforce at %s\n\n", o.TrickleRate, o.TrickleDuration, o.Latency)
	fmt.Fprintf(&b, "Publish-to-confirmed is measured outside the pusher: the time the server stored the confirming ledger revision "+
		"(a KV watch by the bench) minus the event's occurredAt, stamped as the publisher hands it over.\n\n")
	fmt.Fprintf(&b, "| field | opt-outs | p50 | p99 | target p99 |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| Email Opt Out | %d | %s | %s | ≤ %s |\n", len(r.trickleEmail), ms(e50), ms(e99), ms(targetEmailP99))
	fmt.Fprintf(&b, "| sales field | %d | %s | %s | ≤ %s |\n\n", len(r.trickleSales), ms(s50), ms(s99), ms(targetSalesP99))
	fmt.Fprintf(&b, "Where the milliseconds go, from the pusher's own histogram `optout_push_stage_seconds` over the trickle "+
		"(mean / p50 / p99 per observation; p50 and p99 interpolated inside buckets):\n\n")
	fmt.Fprintf(&b, "| stage | what | Email Opt Out | sales field |\n|---|---|---|---|\n")
	var sumE, sumS float64
	for _, st := range stageRows {
		he, hs := r.stages[st.name+"/email"], r.stages[st.name+"/sales"]
		sumE += he.mean()
		sumS += hs.mean()
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", st.name, st.what, stageCell(he), stageCell(hs))
	}
	fmt.Fprintf(&b, "| **sum of means** | | %.1f ms | %.1f ms |\n\n", sumE*1000, sumS*1000)

	fmt.Fprintf(&b, "## (c) Pusher memory (VmRSS from /proc)\n\n| when | RSS |\n|---|---|\n")
	fmt.Fprintf(&b, "| idle, after warm-up | %s |\n| trickle: peak / mean | %s / %s |\n| burst: peak sampled every 100 ms / VmHWM after | %s / %s |\n",
		mb(r.rssIdle), mb(r.rssSteadyPeak), mb(r.rssSteadyMean), mb(r.rssBurstPeak), mb(r.rssHWM))
	for _, i := range r.iso {
		fmt.Fprintf(&b, "| %d tenants trickling (d): peak | %s (%d goroutines after) |\n", i.tenants, mb(i.rssPeak), i.goroutines)
	}
	b.WriteString("\n")
	for _, i := range r.iso {
		if i.heapTop != "" {
			fmt.Fprintf(&b, "<details><summary>pusher heap with %d tenants (in use)</summary>\n\n```\n%s\n```\n</details>\n\n", i.tenants, i.heapTop)
		}
	}

	for _, i := range r.iso {
		_, base99, slow99 := i.ratio()
		b50, _ := Percentiles(i.base)
		w50, _ := Percentiles(i.slow)
		o50, o99 := Percentiles(i.slowOwn)
		fmt.Fprintf(&b, "## (d) One slow tenant among %d, each trickling one opt-out a second\n\n", i.tenants)
		fmt.Fprintf(&b, "Salesforce at %s for everyone for %s, then one tenant's at %s a call for %s, then %s again: the two halves "+
			"without the slow tenant are pooled, so a drift in the shared machine's load does not pass for the slow tenant's effect.\n\n",
			o.Latency, o.IsoDuration/2, o.SlowLatency, o.IsoDuration, o.IsoDuration/2)
		if i.err != nil {
			fmt.Fprintf(&b, "**The run failed:** %v\n\n", i.err)
		}
		fmt.Fprintf(&b, "| phase | other tenants' opt-outs | p50 | p99 |\n|---|---|---|---|\n")
		fmt.Fprintf(&b, "| no slow tenant | %d | %s | %s |\n", len(i.base), ms(b50), ms(base99))
		fmt.Fprintf(&b, "| one slow tenant | %d | %s | %s |\n", len(i.slow), ms(w50), ms(slow99))
		fmt.Fprintf(&b, "| (the slow tenant itself) | %d confirmed | %s | %s |\n\n", len(i.slowOwn), ms(o50), ms(o99))
		fmt.Fprintf(&b, "CPU over both phases: %s.\n\n", cpuLine(i.cpu))
		for _, p := range []struct{ who, top string }{{"pusher", i.pusherTop}, {"nats-server", i.serverTop}} {
			if p.top != "" {
				fmt.Fprintf(&b, "<details><summary>%s CPU profile, %d tenants trickling (%d s, by cumulative time)</summary>\n\n```\n%s\n```\n</details>\n\n", p.who, i.tenants, profileSeconds, p.top)
			}
		}
	}

	fmt.Fprintf(&b, "## (e) What bounds the rate\n\n")
	fmt.Fprintf(&b, "CPU per process during the burst (%s wall; the machine has %d cores): %s.\n\n", r.cpuWall.Round(time.Millisecond), runtime.NumCPU(), cpuLine(r.cpu))
	// CPU per opt-out is steadier than a rate on a shared machine, and says
	// what the rate could be on this one at best.
	var total float64
	cpuPer := map[string]float64{}
	for _, c := range r.cpu {
		us := float64(c.CPU.Microseconds()) / float64(max(r.burstN, 1))
		cpuPer[c.Name] = us
		if !strings.HasPrefix(c.Name, "bench") {
			total += us
		}
	}
	cores := float64(runtime.NumCPU())
	goal := targetDrainShare * r.raw.consume
	fmt.Fprintf(&b, "CPU per opt-out: nats-server %.0f µs, pusher %.0f µs, sandbox %.0f µs, publisher %.0f µs: %.0f µs in all. "+
		"On %.0f cores that caps the drain near %.0f/s even with the machine to itself; the server's share alone caps it at %.0f/s "+
		"and the pusher's alone at %.0f/s. The target, %.1f × %.0f = %.0f opt-outs/s, would need at most %.0f µs per opt-out "+
		"across all of them.\n\n",
		cpuPer["nats-server"], cpuPer["pusher"], cpuPer["sfsandbox"], cpuPer["publisher"], total,
		cores, cores*1e6/max(total, 1), cores*1e6/max(cpuPer["nats-server"], 1), cores*1e6/max(cpuPer["pusher"], 1),
		targetDrainShare, r.raw.consume, goal, cores*1e6/max(goal, 1))
	per := float64(r.pusherMsgs) / float64(max(r.burstN, 1))
	fmt.Fprintf(&b, "Round trips: the pusher sent the server %.1f messages per opt-out during the burst (%d: requests, KV writes and acks, "+
		"from the server's `/connz`) and received %.1f. For scale, `nats bench` on this server: %.0f KV puts/s and %.0f KV gets/s "+
		"(16 synchronous clients), %.0f async publishes/s.\n\n",
		per, r.pusherMsgs, float64(r.pusherMsgsOut)/float64(max(r.burstN, 1)), r.raw.kvPut, r.raw.kvGet, r.raw.pub)
	writeCeiling(&b, r.raw, goal, rate, cpuPer["pusher"])
	writeFloors(&b, r.floors, r.raw.consume, goal, rate)
	b.WriteString(dataPath)
	fmt.Fprintf(&b, "<details><summary>pusher CPU profile during the burst (%d s, by cumulative time)</summary>\n\n```\n%s\n```\n</details>\n\n", profileSeconds, r.pusherTop)
	fmt.Fprintf(&b, "<details><summary>nats-server CPU profile during the burst (%d s)</summary>\n\n```\n%s\n```\n</details>\n\n", profileSeconds, r.serverTop)

	fmt.Fprintf(&b, "## Raw broker rates (`nats bench`, same server, same run)\n\n")
	if r.rawErr != nil {
		fmt.Fprintf(&b, "nats bench failed: %v\n\n", r.rawErr)
	}
	fmt.Fprintf(&b, "```\n%s\n```\n", strings.TrimSpace(r.raw.output))
	return b.String()
}

var stageRows = []struct{ name, what string }{
	{"arrive", "occurredAt to the pusher holding the message (publisher, broker)"},
	{"fold", "fold into the ledger, until acked or held for the push"},
	{"queue", "queued dirty to taken into a batch (linger)"},
	{"slot", "waiting for a worker slot"},
	{"read", "ledger read of the batch"},
	{"salesforce_write", "Salesforce call: Collections update, or the sales field's composite read-and-write (per call)"},
	{"confirm", "confirmation by compare-and-set"},
}

func stageCell(h hist) string {
	if h.count == 0 {
		return "–"
	}
	// Below the first bucket's bound interpolation means nothing.
	f := func(sec float64) string {
		if sec < stageFloor {
			return "<0.5"
		}
		return fmt.Sprintf("%.1f", sec*1000)
	}
	return fmt.Sprintf("%s / %s / %s ms", f(h.mean()), f(h.quantile(0.5)), f(h.quantile(0.99)))
}

// stageFloor is the stage histogram's first bucket bound (0.5 ms).
const stageFloor = 0.0005

func cpuLine(cs []cpuUse) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %.2f s (%.2f cores)", c.Name, c.CPU.Seconds(), c.Cores))
	}
	return strings.Join(parts, ", ")
}

func envNote(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return " with " + strings.Join(env, " ")
}

// writeCeiling estimates, from this run's nats bench rates, the best drain
// a design keeping a durable per-person ledger could reach on this machine,
// and what that leaves the pusher. Each rate was measured with the
// machine's cores busy doing only that, so adding their per-message times
// is what doing all of them costs (an estimate, not a measurement).
func writeCeiling(b *strings.Builder, raw rawRates, goal, drain, pusherUS float64) {
	if raw.pub <= 0 || raw.consume <= 0 || raw.kvPut <= 0 || goal <= 0 {
		return
	}
	us := func(rate float64) float64 { return 1e6 / rate }
	synced := us(raw.pub) + us(raw.consume) + us(raw.kvPut) + us(raw.pub)
	piped := us(raw.pub) + us(raw.consume) + 2*us(raw.pub)
	fmt.Fprintf(b, "**The ceiling of the design, from the same run's `nats bench` rates.** Every opt-out must at least be "+
		"stored (an async publish, %.1f µs of this machine), consumed and acknowledged (%.1f µs) and, before its ack, written "+
		"once to its person's ledger entry, whose audit copy the server stores too (one more stored message). With that write "+
		"a synchronous KV put (%.1f µs) the machine does at most %.0f opt-outs/s with a pusher that costs nothing; pipelined "+
		"at the async publish rate, %.0f/s. ",
		us(raw.pub), us(raw.consume), us(raw.kvPut), 1e6/synced, 1e6/piped)
	if left := us(goal) - piped; left <= 0 {
		fmt.Fprintf(b, "The target, %.0f/s, is beyond both: a per-person ledger written before the ack, with its audit trail, "+
			"cannot reach it on this machine whatever the pusher does.\n\n", goal)
	} else {
		fmt.Fprintf(b, "The target, %.0f/s, leaves the pusher at most %.1f µs of CPU per opt-out even then (decoding the event, "+
			"reading and writing the entry, its share of a Salesforce batch, confirming it); it spends %.0f µs now.\n\n", goal, left, pusherUS)
	}
	fmt.Fprintf(b, "The drain rate above is %.0f%% of the synchronous-write ceiling.\n\n", 100*drain/(1e6/synced))
}

// dataPath says which round trips and stored messages one opt-out costs,
// as services/pusher and shared/store/ledger do it now: keep it in step with
// them (the measured figures above check it).
const headOfLine = `The lone opt-out waits behind the burst: the pusher reads every tenant's events through one
consumer, in the order they were stored, at most ` + "`OPTOUT_MAX_ACK_PENDING`" + ` (10,000) unacknowledged, so an
event stored behind another tenant's burst is delivered only when most of the burst has been folded.
Per-tenant consumers did not have this, but their state writes saturated the server at 1,000 tenants
(d); consumers over a few partitions of the tenants (a subject transform with ` + "`partition()`" + `) would
bound it to the tenants sharing the burst's partition. Not done.

`

const dataPath = `Where they go, for a person never seen before (the burst's case), on Email Opt Out: the
**fold** creates the Salesforce-id alias, reads the Salesforce-only entry it might merge and creates
the person's entry (compare-and-set: 3 round trips), and hands the entry it wrote, with its
revision, to the push, holding the event unacked; the **push** starts from that entry without
reading it, updates it by compare-and-set after Salesforce answers (1 round trip; Salesforce is one
call per 200), and acks the event. The dirty set is not touched: an event's person gets a dirty
marker only when its push has not left it clean within 2 s (a held-back tenant, a retry's wait), and
the event is acked after that. A sales-field write adds its claim (one more compare-and-set) and one
Salesforce read per 200. The server stores 6 messages per opt-out (the event, the alias, two
revisions of the entry and their two audit copies sourced server-side) and the consumer's ack state,
where ` + "`nats bench js consume`" + ` reads one stored message and acks it.

What would move the pusher closer to the floor (not done here; the floor itself, measured above,
is below the target):
- **The server's share** is the data model's: two revisions of the entry, each with its audit copy,
  and the alias, for every new person.
- **The pusher's share** is round trips and JSON: fold a pull's events together and pipeline their
  compare-and-set writes (` + "`PublishMsgAsync`" + ` with the expected last subject sequence) instead of
  one request per person and step; the one read left per opt-out is the merge check.
- **Many tenants**: the pusher now reads every tenant through one consumer of the events stream; it
  had one per tenant, each writing its own state file, which took two thirds of the server's CPU with
  1,000 tenants trickling and put their p99 at 10 s. The Salesforce clients' transport no longer caps
  idle connections at 100 over all orgs (fewer than 1,000 orgs need): redialing took about a tenth of
  the pusher's CPU in (d).

`

// rates lists measured rates, as "a, b and c msgs/s".
func rates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	if len(parts) < 2 {
		return strings.Join(parts, "") + " msgs/s"
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1] + " msgs/s"
}

// writeFloors reports the design floor (runFloor): measured, where the
// ceiling above is estimated from separate rates.
func writeFloors(b *strings.Builder, fs []floorResult, consume, goal, drain float64) {
	for _, f := range fs {
		if f.err != nil {
			fmt.Fprintf(b, "**The design floor%s** could not be measured: %v\n\n", f.label(), f.err)
			continue
		}
		if !f.audit {
			fmt.Fprintf(b, "**The same floor without the audit stream** (deleted before the run; docs/architecture.md#the-audit-trail requires it): %s, "+
				"**%.0f opt-outs/s, %.3f of the raw consume rate**. CPU: %s.\n\n",
				f.drain.Round(time.Millisecond), f.rate(), f.rate()/max(consume, 1), cpuLine(f.cpu))
			continue
		}
		fmt.Fprintf(b, "**The design floor, measured.** On the same server after the burst, the same %d opt-outs were published "+
			"(the same publisher process) into streams and buckets of their own, made as in production (file storage, the audit "+
			"stream sourcing the ledger bucket), and drained by a consumer that does only the broker work the ledger rules of docs/architecture.md#the-ledger "+
			"require of each opt-out: a compare-and-set create of the person's entry (%d bytes, a burst entry's size) before the "+
			"ack, a compare-and-set update once the push is confirmed, and the ack. It decodes nothing, folds nothing, calls no "+
			"Salesforce and writes no alias; its writes are asynchronous publishes with the expected last subject sequence, %d "+
			"events a step and %d steps at once. First publish to last ack: %s, **%.0f opt-outs/s, %.3f of the raw consume "+
			"rate**, where the target is %.0f/s (%.1f). CPU: %s. The pusher's drain above is %.0f%% of this floor.\n\n",
			f.n, f.entryBytes, floorChunk, floorSteps, f.drain.Round(time.Millisecond), f.rate(), f.rate()/max(consume, 1),
			goal, targetDrainShare, cpuLine(f.cpu), 100*drain/max(f.rate(), 1))
	}
}
