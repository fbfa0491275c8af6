package push_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
)

// Two replicas that each read a person at a different revision must not
// both write it: the older value could land last. Found by make
// test-cluster: a replica's true, delayed, landed after the other replica
// had written and confirmed the person's newer resubscribe (false), and
// Salesforce held the opt-out again until the next round cleared it.

// sfLog records, across replicas, the values Salesforce confirmed for each
// record, in the order the calls completed, and when.
type sfLog struct {
	mu     sync.Mutex
	values map[string][]bool
	at     map[string][]time.Time
}

func (l *sfLog) add(u []salesforce.Update, res []salesforce.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.values == nil {
		l.values, l.at = map[string][]bool{}, map[string][]time.Time{}
	}
	for i, r := range res {
		if i < len(u) && r.Success {
			l.values[u[i].ID] = append(l.values[u[i].ID], u[i].Value)
			l.at[u[i].ID] = append(l.at[u[i].ID], time.Now())
		}
	}
}

func (l *sfLog) of(id string) ([]bool, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bool(nil), l.values[id]...), append([]time.Time(nil), l.at[id]...)
}

// gate holds the first write call it sees until release, or, when the
// caller gives the call up first, notes when and (dead) never returns.
type gate struct {
	once     sync.Once
	entered  chan struct{}
	release  chan struct{}
	dead     bool // a caller that gave up never returns: it died without reporting
	gaveUpAt atomic.Int64
}

func newGate(dead bool) *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{}), dead: dead}
}

type gatedClients struct {
	inner *sfcreds.Pool
	log   *sfLog
	gate  *gate // nil: no call is held
}

func (g gatedClients) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	c, err := g.inner.Get(ctx, t)
	if err != nil {
		return nil, err
	}
	return gatedClient{c, g}, nil
}

type gatedClient struct {
	sfcreds.Client
	g gatedClients
}

func (c gatedClient) UpdateOptOut(ctx context.Context, u []salesforce.Update) ([]salesforce.Result, error) {
	if err := c.hold(ctx); err != nil {
		return nil, err
	}
	res, err := c.Client.UpdateOptOut(ctx, u)
	if err == nil {
		c.g.log.add(u, res)
	}
	return res, err
}

// ReadAndUpdate is the sales field's write: held like UpdateOptOut.
func (c gatedClient) ReadAndUpdate(ctx context.Context, u []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	if err := c.hold(ctx); err != nil {
		return nil, err
	}
	res, err := c.Client.ReadAndUpdate(ctx, u)
	if err == nil {
		c.g.log.add(updatesOf(u), resultsOf(res))
	}
	return res, err
}

// hold holds the first write call until the gate's release; an error
// when the caller gave the call up first.
func (c gatedClient) hold(ctx context.Context) error {
	held := false
	if c.g.gate != nil {
		c.g.gate.once.Do(func() { held = true })
	}
	if held {
		gt := c.g.gate
		close(gt.entered)
		select {
		case <-gt.release:
		case <-ctx.Done():
			// The replica gave its call up: it never reaches Salesforce.
			gt.gaveUpAt.Store(time.Now().UnixNano())
			if gt.dead {
				<-gt.release
			}
			return ctx.Err()
		}
	}
	return nil
}

func updatesOf(rus []salesforce.ReadUpdate) []salesforce.Update {
	out := make([]salesforce.Update, len(rus))
	for i, ru := range rus {
		out[i] = ru.Update
	}
	return out
}

func resultsOf(rrs []salesforce.ReadResult) []salesforce.Result {
	out := make([]salesforce.Result, len(rrs))
	for i, rr := range rrs {
		out[i] = rr.Result
	}
	return out
}

func (s *stack) waitFor(what string, ch <-chan struct{}, within time.Duration) {
	s.t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		s.t.Fatalf("timed out waiting for %s", what)
	}
}

// heldOptOut starts replica A on a sales-field tenant, publishes an
// opt-out an hour old and returns once A's write of it is held in flight
// by g: the record, the log of what Salesforce took, and the opt-out's time.
func (s *stack) heldOptOut(cfg push.Config, g *gate) (record string, log *sfLog, t0 time.Time) {
	s.t.Helper()
	s.salesField()
	record, log, t0 = s.seed("acme", "Contact"), &sfLog{}, time.Now().Add(-time.Hour)
	s.startWith(cfg, gatedClients{inner: s.Clients, log: log, gate: g})
	// Registered after the replica, so it runs before the replica's stop,
	// which waits for the held call.
	s.t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	s.publish("acme", "p", sfID(record), at(t0))
	s.waitFor("replica A's write", g.entered, 10*time.Second)
	return record, log, t0
}

func TestTwoReplicasNeverWriteOnePersonAtOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	g := newGate(false)
	c, log, t0 := s.heldOptOut(fastConfig(), g)

	// Replica B starts and the person resubscribes: B finds the person
	// dirty (its sweep runs every 100 ms) while A's true may still land.
	s.startWith(fastConfig(), gatedClients{inner: s.Clients, log: log})
	s.publish("acme", "p", sfID(c), at(t0.Add(time.Minute)), resub())
	s.Eventually("the resubscribe folded", 10*time.Second, func() bool { return !s.entry("acme", "p").OptedOut })
	time.Sleep(1500 * time.Millisecond) // B's chances to write meanwhile
	close(g.release)

	s.Eventually("the resubscribe written", 20*time.Second, func() bool {
		return s.Settled("acme") && !s.optedOut("acme", c, sales)
	})
	if got, _ := log.of(c); fmt.Sprint(got) != "[true false]" {
		t.Errorf("Salesforce took %s=%v in this order; want [true false]: the opt-out, then the resubscribe, never the older value last", sales, got)
	}
	if e := s.entry("acme", "p"); e.Writing != nil || e.Confirmed == nil || *e.Confirmed {
		t.Errorf("ledger: claim %+v, confirmed %v; want the resubscribe confirmed and no claim left", e.Writing, e.Confirmed)
	}
}

// A replica whose call outlives its claim gives it up before the claim
// ends, by as much as the clock skew claims allow, so a replica whose
// clock runs ahead (within that) still never writes while the call may
// land. Replica A here dies as it gives up, so only the claim's end lets B
// write.
func TestAWriteHeldPastItsClaimEndsBeforeASkewedReplicaWrites(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := fastConfig()
	// Claims of 8 s: a call is given up 1 s before one ends. B's clock runs
	// half that ahead, so B may write 0.5 s after A gave up: room for a
	// loaded machine's scheduling, never for both writes at once.
	cfg.ClaimTTL = 8 * time.Second
	g := newGate(true)
	c, log, t0 := s.heldOptOut(cfg, g)
	claimed := time.Now()

	skew := 500 * time.Millisecond
	s.startIn(s.Ctx, cfg, gatedClients{inner: s.Clients, log: log}, func(svc *push.Service) {
		svc.Now = func() time.Time { return time.Now().Add(skew) }
	})
	s.publish("acme", "p", sfID(c), at(t0.Add(time.Minute)), resub())

	s.Eventually("the resubscribe written by B", 20*time.Second, func() bool {
		return s.Settled("acme") && !s.optedOut("acme", c, sales)
	})
	values, times := log.of(c)
	if fmt.Sprint(values) != "[false]" {
		t.Fatalf("Salesforce took %s=%v; want only B's false (A's call was given up)", sales, values)
	}
	gaveUp := g.gaveUpAt.Load()
	if gaveUp == 0 {
		t.Fatal("replica A never gave its held call up")
	}
	if !time.Unix(0, gaveUp).Before(times[0]) {
		t.Errorf("replica A gave its call up %s after B wrote the person: both could have landed", time.Unix(0, gaveUp).Sub(times[0]))
	}
	if wait := times[0].Sub(claimed); wait < cfg.ClaimTTL-time.Second {
		t.Errorf("B wrote %s after A claimed the person; want it to wait for the claim to end (%s, less its clock's skew)", wait, cfg.ClaimTTL)
	}
}

// A replica killed mid-write holds its persons' opt-outs for seconds, not
// for its whole claim: a writer of the same value takes the person over
// after the claim's Takeover (the order of two equal writes does not
// matter), while a writer of the other value would still wait (the test
// above).
func TestADeadReplicasOptOutIsTakenOverBeforeItsClaimEnds(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := fastConfig()
	cfg.ClaimTTL = 40 * time.Second // takeover after 10 s
	g := newGate(true)              // A dies: its call never returns
	c, log, _ := s.heldOptOut(cfg, g)
	claimed := time.Now()
	held := s.entry("acme", "p").Writing
	if held == nil || !held.Value || held.Takeover.IsZero() {
		t.Fatalf("A's claim %+v; want it to say it writes true and when it may be taken over", held)
	}

	s.startWith(cfg, gatedClients{inner: s.Clients, log: log})
	s.Eventually("the opt-out written by B", 30*time.Second, func() bool {
		return s.Settled("acme") && s.optedOut("acme", c, sales)
	})
	values, times := log.of(c)
	if fmt.Sprint(values) != "[true]" {
		t.Fatalf("Salesforce took %s=%v; want B's true (A's call never returned)", sales, values)
	}
	if until := claimed.Add(cfg.ClaimTTL); !times[0].Before(until.Add(-10 * time.Second)) {
		t.Errorf("B wrote the opt-out %s after A claimed it; want it taken over long before A's claim ends (%s)", times[0].Sub(claimed), cfg.ClaimTTL)
	}
	if e := s.entry("acme", "p"); e.Writing == nil || e.Writing.ID != "" || e.Writing.Value != true {
		t.Errorf("after B's release: claim %+v; want a residual claim holding writers of false while A's call may land", e.Writing)
	}
}
