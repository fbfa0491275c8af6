package eventstream_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

// TestTenantBacklog: the pusher's one consumer serves every tenant, and a
// tenant's backlog is counted in the stream from its ack floor and its
// last delivery.
func TestTenantBacklog(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	pub := natsx.Publisher{JS: p.JS, Topology: p.Topology}
	// Sequences 1-5, the tenants interleaved as they arrive.
	for _, ev := range []struct{ id, tenant string }{{"a1", "acme"}, {"g1", "globex"}, {"a2", "acme"}, {"g2", "globex"}, {"a3", "acme"}} {
		m := nats.NewMsg(p.Topology.EventsSubject(ev.tenant))
		m.Data = validEvent(t, ev.id, ev.tenant)
		if _, err := pub.Publish(ctx, m, ev.id); err != nil {
			t.Fatal(err)
		}
	}
	backlog := func(tenant string) eventstream.Backlog {
		t.Helper()
		b, err := eventstream.TenantBacklog(ctx, p.JS, p.Topology, tenant)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type want struct {
		exists          bool
		stored, waiting uint64
		inFlight        int
		oldest          uint64 // 0: none
	}
	check := func(when, tenant string, w want) {
		t.Helper()
		b := backlog(tenant)
		oldest := uint64(0)
		if b.Oldest != nil {
			oldest = b.Oldest.Seq
			if b.Oldest.Subject != p.Topology.EventsSubject(tenant) || b.Oldest.Received.IsZero() || len(b.Oldest.Data) == 0 {
				t.Errorf("%s: %s's oldest event = %+v; want its own, stored, with its body", when, tenant, b.Oldest)
			}
		}
		got := want{b.ConsumerExists, b.Stored, b.Waiting, b.InFlight, oldest}
		if got != w {
			t.Errorf("%s: %s's backlog = %+v; want %+v", when, tenant, got, w)
		}
		if b.Consumer != p.Topology.PusherConsumer() {
			t.Errorf("%s: backlog read from consumer %q; want %q", when, b.Consumer, p.Topology.PusherConsumer())
		}
	}

	// Before any pusher ran, every stored event waits.
	check("no pusher yet", "acme", want{false, 3, 3, 0, 1})
	check("no pusher yet", "globex", want{false, 2, 2, 0, 2})

	c, err := eventstream.EnsurePusherConsumer(ctx, p.JS, p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(n int) []jetstream.Msg {
		t.Helper()
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("fetched %d; want %d", len(msgs), n)
		}
		return msgs
	}
	// a1, g1 and a2 delivered; a1 and g1 acknowledged, a2 not yet.
	msgs := fetch(3)
	for _, m := range msgs[:2] {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check("a2 in flight", "acme", want{true, 3, 1, 1, 3})
	check("a2 in flight", "globex", want{true, 2, 1, 0, 4})

	// g2 delivered and acknowledged while a2 still is not: the ack floor
	// stays before a2, so g2 still counts (the documented upper bound).
	if err := fetch(1)[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	check("g2 acked after a2", "globex", want{true, 2, 0, 1, 4})
	// a3 and g3 (6) too: two of each tenant's past the floor, but no more
	// than the one event (a2) the consumer has unacknowledged can be in
	// flight.
	m := nats.NewMsg(p.Topology.EventsSubject("globex"))
	m.Data = validEvent(t, "g3", "globex")
	if _, err := pub.Publish(ctx, m, "g3"); err != nil {
		t.Fatal(err)
	}
	for _, m := range fetch(2) {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check("a3 and g3 acked after a2", "globex", want{true, 3, 0, 1, 4})
	check("a3 and g3 acked after a2", "acme", want{true, 3, 0, 1, 3})
	if err := msgs[2].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	check("a2 acked", "globex", want{true, 3, 0, 0, 0})
	check("a2 acked", "acme", want{true, 3, 0, 0, 0})

	check("unknown tenant", "nobody", want{true, 0, 0, 0, 0})
}
