package push_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestRetryHorizonDeadLettersWithAnAlertingMetric(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Org("globex").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy"})
	cfg := fastConfig()
	cfg.RetryHorizon = 400 * time.Millisecond
	// The test meter lives as long as the process: count from here, so
	// -count=N runs see their own dead letter.
	before := counter(t, "optout_retry_horizon_exceeded", "globex")
	s.start(cfg)
	c := s.seed("globex", "Contact")
	s.publish("globex", "sc-h", sfID(c))
	s.Eventually("dead-lettered after the horizon", 15*time.Second, func() bool { return len(s.dlq("globex")) == 1 })
	d := s.dlq("globex")[0]
	if d.Header.Get(event.HeaderErrorCode) != "retry_horizon_exceeded" || !strings.Contains(d.Header.Get(event.HeaderError), "SERVER_UNAVAILABLE") {
		t.Errorf("DLQ headers = %v", d.Header)
	}
	if e := s.entry("globex", "sc-h"); e.State != optout.StateFailed {
		t.Errorf("entry state = %s; want FAILED", e.State)
	}
	if got := counter(t, "optout_retry_horizon_exceeded", "globex") - before; got != 1 {
		t.Errorf("optout_retry_horizon_exceeded{tenant=globex} rose by %d; want 1", got)
	}
	s.Eventually("acked", 10*time.Second, func() bool { return s.Settled("globex") })
}

// counter reads a counter's value for one tenant from the test meter.
func counter(t *testing.T, name, tenantID string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.MetricReader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is %T", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value(attribute.Key("tenant")); ok && v.AsString() == tenantID {
					total += dp.Value
				}
			}
		}
	}
	return total
}

func TestRejectedCredentialsWaitUntilFixed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Env.Set("SF_GLOBEX_CLIENT_SECRET", "wrong")
	s.start(fastConfig())
	c := s.seed("globex", "Contact")
	s.publish("globex", "sc-c", sfID(c))
	s.Eventually("tenant unhealthy with the reason", 10*time.Second, func() bool {
		h, err := s.Health.Get(s.Ctx, "globex")
		return err == nil && h.Mode == tenant.ModeUnhealthy && strings.Contains(h.Reason, "invalid_client")
	})
	if s.optedOut("globex", c, std) || len(s.dlq("globex")) != 0 {
		t.Fatal("written or dead-lettered while the credentials were rejected")
	}
	s.Env.Set("SF_GLOBEX_CLIENT_SECRET", "globex-secret")
	s.Eventually("applied once the Secret is fixed", 15*time.Second, func() bool { return s.optedOut("globex", c, std) })
	s.Eventually("healthy again", 5*time.Second, func() bool {
		h, err := s.Health.Get(s.Ctx, "globex")
		return err == nil && h.Mode == tenant.ModeHealthy
	})
}

// A rejected secret keeps the tenant unhealthy: its health is decided by a
// real Salesforce call (token and describe), so it never reads healthy
// while nothing can be written; the change is logged once, then a
// reminder at most every UnhealthyReminder.
func TestRejectedCredentialsDoNotFlap(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Env.Set("SF_GLOBEX_CLIENT_SECRET", "wrong")
	watch, err := s.Prov.Health.Watch(s.Ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	cfg := fastConfig()
	cfg.HealthRecheck = 50 * time.Millisecond
	cfg.UnhealthyReminder = 300 * time.Millisecond
	start := time.Now()
	s.start(cfg)
	c := s.seed("globex", "Contact")
	s.publish("globex", "sc-c", sfID(c))

	var modes []tenant.Mode
	var rechecks int
	for rechecks < 40 { // 40 health records: about 2 s of rechecks
		select {
		case kve := <-watch.Updates():
			if kve == nil {
				continue // the end of the current values
			}
			var h tenant.Health
			if err := json.Unmarshal(kve.Value(), &h); err != nil {
				t.Fatal(err)
			}
			if len(modes) == 0 || modes[len(modes)-1] != h.Mode {
				modes = append(modes, h.Mode)
			}
			rechecks++
		case <-time.After(10 * time.Second):
			t.Fatalf("no health record for 10 s; modes so far %v", modes)
		}
	}
	elapsed := time.Since(start)
	if !slices.Equal(modes, []tenant.Mode{tenant.ModeUnhealthy}) {
		t.Fatalf("globex went through %v with a rejected secret; want unhealthy only", modes)
	}
	if s.optedOut("globex", c, std) {
		t.Fatal("written with a rejected secret")
	}
	if n := s.Logs.Count("tenant sync state changed", "globex"); n != 1 {
		t.Errorf("state change logged %d times; want once", n)
	}
	reminders := s.Logs.Count("tenant still not syncing", "globex")
	if most := int(elapsed/cfg.UnhealthyReminder) + 1; reminders < 1 || reminders > most {
		t.Errorf("%d reminders in %s; want between 1 and %d (one every %s at most)", reminders, elapsed, most, cfg.UnhealthyReminder)
	}
	s.Env.Set("SF_GLOBEX_CLIENT_SECRET", "globex-secret")
	s.Eventually("applied once the Secret is fixed", 15*time.Second, func() bool { return s.optedOut("globex", c, std) })
}

func TestReplayBeyondTheDuplicateWindowWritesNothing(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	c := s.seed("acme", "Contact")
	id := s.publish("acme", "sc-r", sfID(c))
	s.Eventually("applied", 10*time.Second, func() bool { return s.Settled("acme") && s.optedOut("acme", c, std) })
	calls := s.writeCalls("acme")

	// The same event again under another Nats-Msg-Id, as a replay after the
	// stream's window would arrive.
	ev := &optoutv1.OptOutEvent{EventId: id, TenantId: "acme", Person: &optoutv1.Person{SalesConnectId: "sc-r", SalesforceId: c},
		Action: optoutv1.Action_UNSUBSCRIBE, OccurredAt: timestamppb.New(s.entry("acme", "sc-r").DecidedAt)}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(s.Topo.EventsSubject("acme"))
	m.Data = data
	m.Header.Set("Nats-Msg-Id", id+"-replayed")
	if _, err := s.Prov.JS.PublishMsg(s.Ctx, m); err != nil {
		t.Fatal(err)
	}
	s.Eventually("replay acked", 10*time.Second, func() bool { return s.Settled("acme") })
	if got := s.writeCalls("acme"); got != calls {
		t.Errorf("the replay made %d more Salesforce calls", got-calls)
	}
	if e := s.entry("acme", "sc-r"); len(e.RecentEvents) != 1 {
		t.Errorf("ledger applied the event %d times", len(e.RecentEvents))
	}
}

func TestShutdownSettlesTheBatchInFlight(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Org("acme").SetLatency(700 * time.Millisecond)
	var inFlight atomic.Int32
	stop := s.startWith(fastConfig(), countingClients{inner: s.Clients, n: &inFlight})
	ids := []string{s.seed("acme", "Contact"), s.seed("acme", "Contact")}
	for _, id := range ids {
		s.publish("acme", "sc-"+id, sfID(id))
	}
	s.Eventually("folded and batch in flight", 10*time.Second, func() bool {
		return s.folded("acme", "sc-"+ids[0], "sc-"+ids[1]) && inFlight.Load() > 0
	})
	stop() // as SIGTERM does: stop pulling, finish the batch, return
	// The batch held its events unacked while in flight: its confirmations
	// acked them before the replica returned (acks are not waited for, so
	// the server is given a moment to count them).
	s.Eventually("every event settled after shutdown", 5*time.Second, func() bool { return s.Drained("acme") })
	for _, id := range ids {
		if !s.optedOut("acme", id, std) {
			t.Errorf("%s not written", id)
		}
		if e := s.entry("acme", "sc-"+id); e.State != optout.StateSynced {
			t.Errorf("%s: ledger %s after shutdown; want the in-flight batch's confirmation recorded", id, e.State)
		}
	}
}

// countingClients counts Salesforce write calls in flight.
type countingClients struct {
	inner *sfcreds.Pool
	n     *atomic.Int32
}

type countingClient struct {
	sfcreds.Client
	n *atomic.Int32
}

func (c countingClients) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	cl, err := c.inner.Get(ctx, t)
	if err != nil {
		return nil, err
	}
	return countingClient{cl, c.n}, nil
}

func (c countingClient) UpdateOptOut(ctx context.Context, u []salesforce.Update) ([]salesforce.Result, error) {
	c.n.Add(1)
	defer c.n.Add(-1)
	return c.Client.UpdateOptOut(ctx, u)
}

func (c countingClient) ReadAndUpdate(ctx context.Context, u []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	c.n.Add(1)
	defer c.n.Add(-1)
	return c.Client.ReadAndUpdate(ctx, u)
}
