package eventstream_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

// legacyConsumer makes the per-tenant consumer a pusher before the shared
// consumer made (pusher_<tenant>, on the tenant's subject only).
func legacyConsumer(t *testing.T, ctx context.Context, p *natsx.Provisioned, tenant string) jetstream.Consumer {
	t.Helper()
	c, err := p.JS.CreateOrUpdateConsumer(ctx, p.Topology.EventsStream(), jetstream.ConsumerConfig{
		Durable:       "pusher_" + tenant,
		FilterSubject: p.Topology.EventsSubject(tenant),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchN fetches n messages and acks the first acked of them.
func fetchN(t *testing.T, ctx context.Context, c jetstream.Consumer, n, acked int) {
	t.Helper()
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if got < acked {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got++
	}
	if got != n {
		t.Fatalf("fetched %d; want %d", got, n)
	}
}

// consumerNames lists the events stream's consumers.
func consumerNames(t *testing.T, ctx context.Context, p *natsx.Provisioned) []string {
	t.Helper()
	s, err := p.JS.Stream(ctx, p.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	l := s.ConsumerNames(ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestPusherConsumerReplacesPerTenantConsumers: on a deployment an earlier
// version ran, with one consumer per tenant, the shared consumer starts at
// the first event any of them had not settled (or, for a tenant no pusher
// ever pulled, its first event): every unsettled event is delivered, none
// before that point; then the old consumers are deleted, except one a
// pusher still pulls from, deleted once it stops.
func TestPusherConsumerReplacesPerTenantConsumers(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	// Sequence:     1    2    3    4    5    6    7    8    9
	events := []string{"a1", "b1", "c1", "b2", "c2", "b3", "d1", "c3", "b4"}
	for _, id := range events {
		m := nats.NewMsg(p.Topology.EventsSubject(id[:1]))
		m.Data = validEvent(t, id, id[:1])
		if _, err := p.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	a := legacyConsumer(t, ctx, p, "a")
	fetchN(t, ctx, a, 1, 1) // a: settled (its ack floor, 1, must not hold the start back)
	b := legacyConsumer(t, ctx, p, "b")
	fetchN(t, ctx, b, 3, 2) // b: b1, b2 acked; b3 (6) in flight, b4 (9) undelivered
	c := legacyConsumer(t, ctx, p, "c")
	fetchN(t, ctx, c, 1, 1) // c: c1 acked; c2 (5) and c3 (8) undelivered: start at 4
	// d: no consumer, no pusher ever pulled it: d1 (7) must be delivered.

	shared, err := eventstream.EnsurePusherConsumer(ctx, p.JS, p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	cfg := shared.CachedInfo().Config
	if cfg.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cfg.OptStartSeq != 4 {
		t.Fatalf("shared consumer starts with %v at %d; want by start sequence at 4 (after c1, c's ack floor)", cfg.DeliverPolicy, cfg.OptStartSeq)
	}
	batch, err := shared.Fetch(len(events), jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(mustTenant(t, p, m.Subject()))+fmt.Sprint(seqOf(t, m)))
		_ = m.Ack()
	}
	if want := []string{"b4", "c5", "b6", "d7", "c8", "b9"}; !slices.Equal(got, want) {
		t.Errorf("the shared consumer delivered %v (tenant and sequence); want %v: every unsettled event, and only b2 again", got, want)
	}

	// A pusher of the earlier version still pulls from pusher_a.
	pulling := make(chan struct{})
	go func() {
		defer close(pulling)
		if b, err := a.Fetch(1, jetstream.FetchMaxWait(3*time.Second)); err == nil {
			for range b.Messages() {
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := a.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pull on pusher_a never showed on the server")
		}
		time.Sleep(10 * time.Millisecond)
	}
	deleted, kept, err := eventstream.DeleteIdleLegacyConsumers(ctx, p.JS, p.Topology)
	slices.Sort(deleted)
	if err != nil || kept != 1 || !slices.Equal(deleted, []string{"pusher_b", "pusher_c"}) {
		t.Fatalf("first cleanup deleted %v, kept %d, %v; want pusher_b and pusher_c deleted, pusher_a kept", deleted, kept, err)
	}
	<-pulling
	deadline = time.Now().Add(10 * time.Second)
	for {
		deleted, kept, err = eventstream.DeleteIdleLegacyConsumers(ctx, p.JS, p.Topology)
		if err != nil {
			t.Fatal(err)
		}
		if len(deleted) == 1 && deleted[0] == "pusher_a" && kept == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher_a not deleted after its pull ended: deleted %v, kept %d", deleted, kept)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if names := consumerNames(t, ctx, p); !slices.Equal(names, []string{p.Topology.PusherConsumer()}) {
		t.Errorf("consumers on the events stream: %v; want only %s", names, p.Topology.PusherConsumer())
	}
	// Ensured again (a restart), it keeps its start and its progress.
	again, err := eventstream.EnsurePusherConsumer(ctx, p.JS, p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	if info := again.CachedInfo(); info.Config.OptStartSeq != 4 || info.AckFloor.Stream != 9 {
		t.Errorf("after a restart: start %d, ack floor %d; want 4 and 9 kept", info.Config.OptStartSeq, info.AckFloor.Stream)
	}
}

// TestPusherConsumerStartsAtTheBeginningWithoutPerTenantConsumers: a
// fresh deployment's consumer delivers every stored event.
func TestPusherConsumerStartsAtTheBeginningWithoutPerTenantConsumers(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	m := nats.NewMsg(p.Topology.EventsSubject("acme"))
	m.Data = validEvent(t, "evt-1", "acme")
	if _, err := p.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	c, err := eventstream.EnsurePusherConsumer(ctx, p.JS, p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); info.Config.DeliverPolicy != jetstream.DeliverAllPolicy || info.NumPending != 1 {
		t.Errorf("consumer %v with %d pending; want DeliverAll with the stored event pending", info.Config.DeliverPolicy, info.NumPending)
	}
}

// TestEventsStreamKeepsRoomForPerTenantConsumersUntilDeleted: an earlier
// version set the events stream's consumer limit to 1,000,000 and made a
// consumer per tenant. Provision does not lower the limit under them
// (that would refuse the shared consumer), and lowers it once they are
// gone.
func TestEventsStreamKeepsRoomForPerTenantConsumersUntilDeleted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	sc := p.Topology.Streams(1)[0]
	sc.MaxConsumers = 1_000_000
	if _, err := p.JS.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	n := natsx.EventsMaxConsumers
	for i := range n {
		legacyConsumer(t, ctx, p, fmt.Sprintf("t%04d", i))
	}
	if _, err := natsx.Provision(ctx, nc, p.Topology); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstream.EnsurePusherConsumer(ctx, p.JS, p.Topology); err != nil {
		t.Fatalf("the shared consumer beside %d per-tenant ones: %v", n, err)
	}
	deleted, _, err := eventstream.DeleteIdleLegacyConsumers(ctx, p.JS, p.Topology)
	if err != nil || len(deleted) != n {
		t.Fatalf("deleted %d per-tenant consumers, %v; want %d", len(deleted), err, n)
	}
	if _, err := natsx.Provision(ctx, nc, p.Topology); err != nil {
		t.Fatal(err)
	}
	s, err := p.JS.Stream(ctx, p.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxConsumers; got != natsx.EventsMaxConsumers {
		t.Errorf("MaxConsumers after the per-tenant consumers went = %d; want %d", got, natsx.EventsMaxConsumers)
	}
}

func mustTenant(t *testing.T, p *natsx.Provisioned, subject string) string {
	t.Helper()
	tn, ok := p.Topology.TenantFromEventsSubject(subject)
	if !ok {
		t.Fatalf("%s is no events subject", subject)
	}
	return tn
}

func seqOf(t *testing.T, m jetstream.Msg) uint64 {
	t.Helper()
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return md.Sequence.Stream
}
