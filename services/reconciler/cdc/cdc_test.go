package cdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/protobuf/proto"

	"github.com/optout-sync/optout-sync/internal/sandboxproc"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/cdc"
	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/pubsub"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// The sandbox runs as a process (internal/sandboxproc): this binary links
// our Pub/Sub client, whose generated code cannot sit next to the
// sandbox's.

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxproc.Cleanup()
	os.Exit(code)
}

const (
	tn         = sandboxproc.Org // the tenant is the sandbox org
	ourClient  = "optout-sync-cdc-test"
	keepalive  = "300ms"
	watchdog   = 3 * time.Second
	waitLonger = 90 * time.Second
)

// oneClient hands every caller the tenant's client.
type oneClient struct{ c *salesforce.Client }

func (o oneClient) Get(context.Context, string) (sfcreds.Client, error) { return o.c, nil }

// harness is real NATS and Redis, the sandbox as a process, and the
// reconciler's engine; subscribers (replicas) are started on it.
type harness struct {
	t        *testing.T
	ctx      context.Context
	sb       *sandboxproc.Sandbox
	nc       *nats.Conn
	prov     *natsx.Provisioned
	lg       *ledger.Ledger
	store    runs.Store
	cache    *tenant.Cache
	prefix   string
	settings tenant.Settings
	applied  chan *optoutv1.OptOutEvent
	control  chan runs.ControlRequest
	metrics  *cdc.Metrics
	reg      *prometheus.Registry
}

func newHarness(t *testing.T, behavior string, edit func(*tenant.Settings)) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	sb := sandboxproc.Start(t, "      pubSubKeepalive: "+keepalive+"\n"+behavior)
	nc := natstest.Connect(t)
	prov := natstest.Provision(t, nc)
	lg, err := ledger.New(ctx, prov)
	require.NoError(t, err)
	st := tenant.Default(tn)
	st.SyncEnabled, st.CDCEnabled = true, true
	if edit != nil {
		edit(&st)
	}
	require.NoError(t, tenant.Store{KV: prov.Tenants}.Put(ctx, st))
	cache, err := tenant.Watch(ctx, prov.Tenants)
	require.NoError(t, err)
	h := &harness{t: t, ctx: ctx, sb: sb, nc: nc, prov: prov, lg: lg, store: runs.Store{KV: prov.Runs}, cache: cache,
		prefix: locktest.Prefix(t), settings: st,
		applied: make(chan *optoutv1.OptOutEvent, 1000), control: make(chan runs.ControlRequest, 100)}
	// The metrics as Prometheus scrapes them (counters get _total).
	h.reg = prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(h.reg))
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	h.metrics, err = cdc.NewMetrics(mp)
	require.NoError(t, err)
	sub, err := nc.Subscribe(prov.Topology.AppliedSubject(tn), func(m *nats.Msg) {
		ev := &optoutv1.OptOutEvent{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			t.Errorf("undecodable applied event: %v", err)
			return
		}
		if err := event.Validate(ev, time.Now()); err != nil {
			t.Errorf("applied event %s breaks the contract: %v", ev.GetEventId(), err)
		}
		h.applied <- ev
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The reconciler's control subject: a reconcile the subscriber asks for
	// arrives here and is accepted.
	csub, err := nc.Subscribe(prov.Topology.ControlSubject(runs.ControlVerb, tn), func(m *nats.Msg) {
		var rq runs.ControlRequest
		_ = json.Unmarshal(m.Data, &rq)
		h.control <- rq
		data, _ := json.Marshal(runs.ControlReply{Tenant: tn, Accepted: true, RunID: "run-by-" + rq.By})
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = csub.Unsubscribe() })
	return h
}

// replica is one reconciler replica's subscriber, running until stopped.
type replica struct {
	sub    *cdc.Subscriber
	cancel context.CancelFunc
	done   chan struct{}
}

func (h *harness) replica(name string) *replica {
	h.t.Helper()
	sf := h.sb.SalesforceClient(ourClient)
	clients := oneClient{sf}
	locker, err := lock.New(locktest.Client(h.t), lock.Options{Prefix: h.prefix, TTL: 3 * time.Second})
	require.NoError(h.t, err)
	log := zerolog.New(zerolog.NewTestWriter(h.t)).With().Str("replica", name).Logger()
	eng := &engine.Engine{Cfg: engine.DefaultConfig(), Ledger: h.lg, Runs: h.store,
		Publisher: natsx.Publisher{JS: h.prov.JS, Topology: h.prov.Topology}, Topology: h.prov.Topology,
		Clients: clients, Log: log, Holder: name}
	cfg := cdc.DefaultConfig()
	cfg.PubSub = pubsub.Config{Addr: h.sb.PubSubAddr, Plaintext: true}
	cfg.Watchdog, cfg.Tick, cfg.Backoff, cfg.Retry = watchdog, 200*time.Millisecond, 100*time.Millisecond, 2*time.Second
	s := &cdc.Subscriber{Cfg: cfg, Engine: eng, Locker: locker, Runs: h.store, Settings: h.cache, Clients: clients,
		NC: h.nc, Topology: h.prov.Topology, Replica: name, Log: log, Metrics: h.metrics}
	ctx, cancel := context.WithCancel(h.ctx)
	r := &replica{sub: s, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = s.Run(ctx) }()
	h.t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

// until polls cond until it holds (or fails the test after waitLonger).
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitLonger)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric is the tenant's value of a metric as scraped (ok false: absent).
func (h *harness) metric(name string) (float64, bool) {
	h.t.Helper()
	fams, err := h.reg.Gather()
	require.NoError(h.t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tn {
					switch {
					case m.GetCounter() != nil:
						return m.GetCounter().GetValue(), true
					case m.GetGauge() != nil:
						return m.GetGauge().GetValue(), true
					}
				}
			}
		}
	}
	return 0, false
}

func (h *harness) cdcRecord() runs.CDC {
	c, err := h.store.CDC(h.ctx, tn)
	if err != nil && !errors.Is(err, runs.ErrNotFound) {
		h.t.Fatal(err)
	}
	return c
}

// streaming waits until the stream is up and has a stored position (its
// first keepalive): from then on no change can be missed.
func (h *harness) streaming() runs.CDC {
	h.t.Helper()
	var c runs.CDC
	h.until("the stream is up with a stored position", func() bool {
		c = h.cdcRecord()
		return c.State == runs.CDCStreaming && len(c.ReplayID) > 0
	})
	return c
}

// optOut ticks the opt-out field on a record as a Salesforce user would.
func (h *harness) optOut(id string) {
	h.sb.Ctl("PATCH", "/records/"+id, map[string]any{"HasOptedOutOfEmail": true}, nil)
}

// appliedFor waits for the applied event of id; it returns every applied
// event received until then.
func (h *harness) appliedFor(id string) []*optoutv1.OptOutEvent {
	h.t.Helper()
	var got []*optoutv1.OptOutEvent
	timeout := time.After(waitLonger)
	for {
		select {
		case ev := <-h.applied:
			got = append(got, ev)
			if ev.GetPerson().GetSalesforceId() == id {
				return got
			}
		case <-timeout:
			h.t.Fatalf("no applied event for %s (got %d others)", id, len(got))
		}
	}
}

// collect waits for the applied events of ids and counts every applied
// event received until then by record.
func (h *harness) collect(ids ...string) map[string]int {
	h.t.Helper()
	seen := map[string]int{}
	timeout := time.After(waitLonger)
	for {
		all := true
		for _, id := range ids {
			all = all && seen[id] > 0
		}
		if all {
			return seen
		}
		select {
		case ev := <-h.applied:
			seen[ev.GetPerson().GetSalesforceId()]++
		case <-timeout:
			h.t.Fatalf("applied events for %v not all received: %v", ids, seen)
		}
	}
}

// optedOutInLedger waits for the ledger to record id's opt-out (the applied
// event is published before the entry is written).
func (h *harness) optedOutInLedger(id string) {
	h.t.Helper()
	h.until("the ledger records the opt-out of "+id, func() bool {
		it, err := h.lg.Get(h.ctx, optout.Key(tn, "", id), ledger.ViaAlias(), ledger.FollowMerges())
		if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			h.t.Fatal(err)
		}
		return err == nil && it.Entry.OptedOut
	})
}

// A Salesforce user ticks Email Opt Out: Sales Connect hears it on the
// applied subject, and the ledger records the opt-out, seconds later.
func TestEditReachesAppliedSubjectAndLedger(t *testing.T) {
	h := newHarness(t, "", nil)
	id := h.sb.Put("Contact", "edit@x.test")
	h.replica("r1")
	h.streaming()

	h.optOut(id)
	evs := h.appliedFor(id)
	ev := evs[len(evs)-1]
	assert.Equal(t, optoutv1.Action_UNSUBSCRIBE, ev.GetAction())
	assert.Equal(t, optoutv1.Source_SALESFORCE, ev.GetSource())
	assert.Contains(t, ev.GetReason(), "Change Data Capture")
	h.optedOutInLedger(id)
	h.until("the applied change is counted", func() bool { return h.cdcRecord().Applied >= 1 })
	assert.Empty(t, h.cdcRecord().Reason)
	h.until("the metrics count it", func() bool { v, _ := h.metric("optout_cdc_applied_total"); return v >= 1 })
	events, _ := h.metric("optout_cdc_events_total")
	assert.GreaterOrEqual(t, events, 1.0)
	stalled, ok := h.metric("optout_cdc_stalled")
	assert.True(t, ok)
	assert.Zero(t, stalled)
	_, ok = h.metric("optout_cdc_allocation_used_ratio")
	assert.True(t, ok)
}

// A Salesforce-side clear of an opt-out Salesforce had confirmed follows the
// tenant's conflict policy as the nightly run does: under optout-wins it is
// written back (and nothing tells Sales Connect of a resubscribe); under
// latest-wins Sales Connect hears of the resubscribe.
func TestClearFollowsConflictPolicy(t *testing.T) {
	for _, policy := range []string{tenant.PolicyOptOutWins, tenant.PolicyLatestWins} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t, "", func(s *tenant.Settings) { s.ConflictPolicy = policy })
			id := h.sb.Put("Contact", "clear@x.test")
			h.replica("r1")
			h.streaming()
			h.optOut(id)
			require.Equal(t, optoutv1.Action_UNSUBSCRIBE, last(h.appliedFor(id)).GetAction())
			h.optedOutInLedger(id)

			h.sb.Ctl("PATCH", "/records/"+id, map[string]any{"HasOptedOutOfEmail": false}, nil) // a user un-ticks it
			if policy == tenant.PolicyOptOutWins {
				h.until("the opt-out is written back to Salesforce", func() bool {
					var rec struct{ HasOptedOutOfEmail bool }
					h.sb.Ctl("GET", "/records/"+id, nil, &rec)
					return rec.HasOptedOutOfEmail
				})
				marker := h.sb.Put("Contact", "marker@x.test")
				h.optOut(marker)
				evs := h.appliedFor(marker)
				assert.Len(t, evs, 1, "no resubscribe reached Sales Connect")
				h.optedOutInLedger(id)
				return
			}
			ev := last(h.appliedFor(id))
			assert.Equal(t, optoutv1.Action_RESUBSCRIBE, ev.GetAction())
			h.until("the ledger records the resubscribe", func() bool {
				it, err := h.lg.Get(h.ctx, optout.Key(tn, "", id), ledger.ViaAlias(), ledger.FollowMerges())
				return err == nil && !it.Entry.OptedOut
			})
		})
	}
}

// A batch that cannot be applied for a reason retrying will not fix (here
// the org's daily API allowance spent before a write-back) does not hold
// the stream up: a reconcile is asked for with the reason, and later
// changes still arrive.
func TestBatchFailingForGoodAsksForAReconcile(t *testing.T) {
	h := newHarness(t, "", nil)
	id, marker := h.sb.Put("Contact", "spent@x.test"), h.sb.Put("Contact", "marker@x.test")
	h.replica("r1")
	h.streaming()
	h.optOut(id)
	h.appliedFor(id)
	h.optedOutInLedger(id)

	h.sb.Ctl("PUT", "/api-usage", map[string]any{"used": 100000, "max": 100000}, nil)
	h.sb.Ctl("PATCH", "/records/"+id, map[string]any{"HasOptedOutOfEmail": false}, nil) // to be written back: refused
	rq := h.nextControl()
	assert.Equal(t, "cdc:events", rq.By)
	h.until("the reason is recorded", func() bool {
		c := h.cdcRecord()
		return c.Reconcile != nil && strings.Contains(c.Reconcile.Reason, "applying a batch failed")
	})
	h.optOut(marker)
	h.appliedFor(marker)
}

func last(evs []*optoutv1.OptOutEvent) *optoutv1.OptOutEvent { return evs[len(evs)-1] }

// Our own push of 200 opt-outs (sObject Collections carrying our client id
// in Sforce-Call-Options) comes back as a change event and is ignored: no
// applied event, while a user's edit after it is applied.
func TestOwnPushProducesNoAppliedEvent(t *testing.T) {
	h := newHarness(t, "", nil)
	var ids []string
	var ups []salesforce.Update
	for i := range 200 {
		id := h.sb.Put("Contact", "own"+string(rune('a'+i%26))+"@x.test")
		ids = append(ids, id)
		ups = append(ups, salesforce.Update{ID: id, Type: "Contact", Field: optout.StandardField, Value: true})
	}
	marker := h.sb.Put("Contact", "marker@x.test")
	h.replica("r1")
	h.streaming()

	res, err := h.sb.SalesforceClient(ourClient).UpdateOptOut(h.ctx, ups)
	require.NoError(t, err)
	for _, r := range res {
		require.True(t, r.Success)
	}
	h.optOut(marker) // after the push: its event comes after the push's
	evs := h.appliedFor(marker)
	assert.Len(t, evs, 1, "only the user's edit is applied, not our own push")
	_, err = h.lg.Get(h.ctx, optout.Key(tn, "", ids[0]), ledger.ViaAlias())
	assert.ErrorIs(t, err, ledger.ErrNotFound, "our own write is not recorded as a Salesforce-side opt-out")
}

// A subscriber that stops and another that starts later resume from the
// stored replay id: the change made in between is applied, the one applied
// before is not applied again.
func TestRestartResumesFromStoredReplayID(t *testing.T) {
	h := newHarness(t, "", nil)
	a, b, c := h.sb.Put("Contact", "a@x.test"), h.sb.Put("Lead", "b@x.test"), h.sb.Put("Contact", "c@x.test")
	r1 := h.replica("r1")
	h.streaming()
	h.optOut(a)
	first := h.appliedFor(a)
	require.Len(t, first, 1)
	h.until("the position after the change is stored", func() bool { return h.cdcRecord().Applied >= 1 })
	r1.stop()

	h.optOut(b) // while nobody streams
	h.optOut(c)
	h.replica("r2")
	seen := h.collect(b, c)
	assert.Equal(t, map[string]int{b: 1, c: 1}, seen, "the changes made while down, each once, and nothing applied before")
	select {
	case ev := <-h.applied:
		t.Fatalf("unexpected applied event for %s", ev.GetPerson().GetSalesforceId())
	default:
	}
	h.optedOutInLedger(b)
}

// A gap event names records without values: they are read by id and what
// Salesforce holds is applied.
func TestGapEventRereadsRecords(t *testing.T) {
	h := newHarness(t, "", nil)
	h.replica("r1")
	h.streaming()
	// Seeded records send no change event: Salesforce changed them where CDC
	// could not see (the gap's causes).
	var seed struct {
		Records []struct {
			Id                 string
			HasOptedOutOfEmail bool
		}
	}
	h.sb.Ctl("POST", "/seed", map[string]any{"contacts": 3, "optedOutShare": 1.0}, &seed)
	require.Len(t, seed.Records, 3)
	var ids []string
	for _, r := range seed.Records {
		require.True(t, r.HasOptedOutOfEmail)
		ids = append(ids, r.Id)
	}
	h.sb.Ctl("POST", "/pubsub/events", map[string]any{"changeType": "GAP_UPDATE", "entityName": "Contact", "recordIds": ids}, nil)
	got := h.collect(ids...)
	assert.Len(t, got, 3)
	for _, id := range ids {
		h.optedOutInLedger(id)
	}
}

// GAP_OVERFLOW (no record ids) asks the reconciler for a run and says why.
func TestOverflowSchedulesReconcile(t *testing.T) {
	h := newHarness(t, "", nil)
	h.replica("r1")
	h.streaming()
	h.sb.Ctl("POST", "/pubsub/events", map[string]any{"changeType": "GAP_OVERFLOW", "entityName": "Contact"}, nil)
	rq := h.nextControl()
	assert.Equal(t, "cdc:events", rq.By)
	assert.True(t, rq.Full, "an overflow's records are unknown: the run asked for is a full scan")
	var c runs.CDC
	h.until("the reconcile request is recorded", func() bool {
		c = h.cdcRecord()
		return c.Reconcile != nil
	})
	assert.Contains(t, c.Reconcile.Reason, "GAP_OVERFLOW")
	assert.Equal(t, "run-by-cdc:events", c.Reconcile.RunID)
}

func (h *harness) nextControl() runs.ControlRequest {
	h.t.Helper()
	select {
	case rq := <-h.control:
		return rq
	case <-time.After(waitLonger):
		h.t.Fatal("no reconcile requested")
	}
	return runs.ControlRequest{}
}

// A stored replay id Salesforce no longer knows (past 72 h, or corrupted)
// is never silently skipped: a reconcile is requested and the reason
// recorded, and the stream goes on from the newest event.
func TestReplayLostSchedulesReconcile(t *testing.T) {
	h := newHarness(t, "", nil)
	a := h.sb.Put("Contact", "a@x.test")
	r1 := h.replica("r1")
	h.streaming()
	h.optOut(a)
	h.appliedFor(a)
	r1.stop()
	h.sb.Ctl("POST", "/pubsub/purge", nil, nil) // the stored id expires

	h.replica("r2")
	rq := h.nextControl()
	assert.Equal(t, "cdc:replay-lost", rq.By)
	assert.True(t, rq.Full, "a lost position skips an unknown stretch: the run asked for is a full scan")
	var c runs.CDC
	h.until("the reconcile request is recorded and the stream is up again", func() bool {
		c = h.cdcRecord()
		return c.Reconcile != nil && c.State == runs.CDCStreaming && len(c.ReplayID) > 0
	})
	assert.Contains(t, c.Reconcile.Reason, "refused the stored replay id")
	b := h.sb.Put("Contact", "b@x.test")
	h.optOut(b)
	h.appliedFor(b)
}

// A stream gone silent past its watchdog is marked stalled with a reason,
// a reconcile is requested, and streaming resumes when events flow again.
func TestStallPastWatchdog(t *testing.T) {
	h := newHarness(t, "", nil)
	h.replica("r1")
	h.streaming()
	var fault struct{ ID string }
	h.sb.Ctl("POST", "/pubsub/faults", map[string]any{"kind": "stall"}, &fault)
	rq := h.nextControl()
	assert.Equal(t, "cdc:stall", rq.By)
	assert.False(t, rq.Full, "after a stall the stored position resumes the stream: the default run")
	c := h.cdcRecord()
	assert.Equal(t, runs.CDCStalled, c.State)
	assert.Contains(t, c.Reason, "sent nothing")
	stalled, _ := h.metric("optout_cdc_stalled")
	assert.Equal(t, 1.0, stalled)
	h.sb.Ctl("DELETE", "/pubsub/faults/"+fault.ID, nil, nil)
	h.streaming()
	id := h.sb.Put("Contact", "after-stall@x.test")
	h.optOut(id)
	h.appliedFor(id)
}

// When the org's delivered-event allocation is spent, the tenant falls back
// to the nightly run with a reason an admin can read, and the share used
// shows 1.
func TestAllocationExhaustedFallsBack(t *testing.T) {
	h := newHarness(t, "", nil)
	h.replica("r1")
	h.streaming()
	h.sb.Ctl("PUT", "/pubsub/allocation", map[string]any{"max": 3, "used": 1}, nil)
	for i := range 3 {
		h.optOut(h.sb.Put("Contact", "alloc"+string(rune('a'+i))+"@x.test"))
	}
	var c runs.CDC
	h.until("the tenant falls back", func() bool {
		c = h.cdcRecord()
		return c.State == runs.CDCFallback
	})
	assert.Contains(t, c.Reason, "allocation")
	assert.Contains(t, c.Reason, "nightly run")
	assert.InDelta(t, 1.0, c.UsedRatio, 1e-9)
	assert.False(t, c.Until.IsZero(), "says when it tries again")
	// What optoutctl reconcile status and the admin page show.
	words := strings.Join(tenantstatus.CDCLines(&c, time.Now()), "\n")
	assert.Contains(t, words, "off since")
	assert.Contains(t, words, "allocation")
	assert.Contains(t, words, "100% of its allocation of 3")
	ratio, _ := h.metric("optout_cdc_allocation_used_ratio")
	assert.Equal(t, 1.0, ratio)
	stalled, _ := h.metric("optout_cdc_stalled")
	assert.Equal(t, 1.0, stalled, "in fallback")
}

// A tenant whose org does not publish the topic (CDC not enabled for the
// entity) falls back to the nightly run with a reason.
func TestNotEnabledFallsBack(t *testing.T) {
	h := newHarness(t, "", func(s *tenant.Settings) { s.CDCTopic = "/data/AccountChangeEvent" })
	h.replica("r1")
	var c runs.CDC
	h.until("the tenant falls back", func() bool {
		c = h.cdcRecord()
		return c.State == runs.CDCFallback
	})
	assert.Contains(t, c.Reason, "not enabled")
	assert.Contains(t, c.Reason, "nightly run")
}

// Turning CDC off in the tenant's settings stops the stream and says so.
func TestTurnedOffSaysSo(t *testing.T) {
	h := newHarness(t, "", nil)
	r := h.replica("r1")
	h.streaming()
	st := h.settings
	st.CDCEnabled = false
	require.NoError(t, tenant.Store{KV: h.prov.Tenants}.Put(h.ctx, st))
	var c runs.CDC
	h.until("the tenant falls back", func() bool {
		c = h.cdcRecord()
		return c.State == runs.CDCFallback
	})
	assert.Contains(t, c.Reason, "off in the tenant's settings")
	h.until("the replica no longer streams", func() bool { return !r.sub.Streaming(tn) })
}

// Two replicas never both subscribe a tenant; when the holder stops, the
// other takes over from the stored position.
func TestTwoReplicasNeverBothSubscribe(t *testing.T) {
	h := newHarness(t, "", nil)
	r1, r2 := h.replica("r1"), h.replica("r2")
	h.streaming()
	for range 40 { // several ticks of both replicas
		a, b := r1.sub.Streaming(tn), r2.sub.Streaming(tn)
		require.False(t, a && b, "both replicas stream the tenant")
		time.Sleep(50 * time.Millisecond)
	}
	holder, other := r1, r2
	if !r1.sub.Streaming(tn) {
		holder, other = r2, r1
	}
	holder.stop()
	h.until("the other replica takes over", func() bool { return other.sub.Streaming(tn) })
	id := h.sb.Put("Contact", "takeover@x.test")
	h.optOut(id)
	h.appliedFor(id)
}
