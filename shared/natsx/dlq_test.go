package natsx_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/telemetry"
)

// deadLetter stores a DLQ copy the way the pusher writes one.
func deadLetter(t *testing.T, p *natsx.Provisioned, tenant string, data []byte, contentType, code, reason string) uint64 {
	t.Helper()
	m := nats.NewMsg(p.Topology.DLQSubject(tenant))
	m.Data = data
	m.Header.Set(event.HeaderContentType, contentType)
	m.Header.Set(event.HeaderError, reason)
	m.Header.Set(event.HeaderErrorCode, code)
	m.Header.Set(natsx.HeaderErrorClass, "invalid")
	m.Header.Set(natsx.HeaderOriginalSubject, p.Topology.EventsSubject(tenant))
	m.Header.Set(natsx.HeaderStreamSequence, "7")
	ack, err := p.JS.PublishMsg(ctxT(t), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func validEvent(t *testing.T, id, tenant string) []byte {
	t.Helper()
	data, _, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: id, TenantId: tenant,
		Person: &optoutv1.Person{SalesConnectId: "sc-1"}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)),
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDLQListGetCountAndPurge(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	d := natsx.DLQ{JS: p.JS, Topology: p.Topology}

	s1 := deadLetter(t, p, "acme", validEvent(t, "evt-1", "acme"), "application/json", "NOT_FOUND", "record gone")
	s2 := deadLetter(t, p, "globex", []byte("garbage"), "application/protobuf", "undecodable", "body: not a valid protobuf")
	s3 := deadLetter(t, p, "acme", []byte(`{"eventId":"evt-3","nope":1}`), "application/json", "undecodable", "unknown field")

	var all []natsx.DeadLetter
	if err := d.List(ctx, "", func(dl natsx.DeadLetter) error { all = append(all, dl); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Seq != s1 || all[1].Seq != s2 || all[2].Seq != s3 {
		t.Fatalf("list = %+v", all)
	}
	a := all[0]
	if a.Tenant != "acme" || a.Code != "NOT_FOUND" || a.Reason != "record gone" || a.Class != "invalid" ||
		a.OriginalSeq != 7 || a.EventID != "evt-1" || a.ContentType != "application/json" {
		t.Fatalf("dead letter = %+v", a)
	}
	if all[2].EventID != "evt-3" {
		t.Errorf("event id of an invalid JSON event = %q; want it read leniently", all[2].EventID)
	}
	if all[1].EventID != "" {
		t.Errorf("event id of garbage = %q", all[1].EventID)
	}

	var acme []uint64
	if err := d.List(ctx, "acme", func(dl natsx.DeadLetter) error { acme = append(acme, dl.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(acme) != 2 {
		t.Fatalf("acme's dead letters = %v", acme)
	}
	counts, err := d.Counts(ctx)
	if err != nil || counts["acme"] != 2 || counts["globex"] != 1 {
		t.Fatalf("counts = %v, %v", counts, err)
	}

	// Another tenant's sequence is not found: no cross-tenant typo.
	if _, err := d.Get(ctx, "acme", s2); !errors.Is(err, natsx.ErrDeadLetterNotFound) {
		t.Fatalf("get globex's message as acme: %v", err)
	}
	if err := d.Delete(ctx, "acme", s2); !errors.Is(err, natsx.ErrDeadLetterNotFound) {
		t.Fatalf("delete globex's message as acme: %v", err)
	}
	if err := d.Delete(ctx, "acme", s3); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "acme", s3); !errors.Is(err, natsx.ErrDeadLetterNotFound) {
		t.Fatalf("deleted message: %v", err)
	}
	n, err := d.Purge(ctx, "acme")
	if err != nil || n != 1 {
		t.Fatalf("purge acme: %d, %v", n, err)
	}
	if n, _ := d.Count(ctx, "globex"); n != 1 {
		t.Fatalf("purging acme removed globex's dead letters")
	}
}

func TestDLQReplayRevalidatesAndRepublishes(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	d := natsx.DLQ{JS: p.JS, Topology: p.Topology}

	// The event was accepted once already: its id is inside the duplicate
	// window, so a replay under the same Nats-Msg-Id would be dropped.
	data := validEvent(t, "evt-1", "acme")
	first := nats.NewMsg(p.Topology.EventsSubject("acme"))
	first.Data = data
	first.Header.Set(event.HeaderContentType, "application/json")
	if _, err := p.JS.PublishMsg(ctx, first, jetstream.WithMsgID("evt-1")); err != nil {
		t.Fatal(err)
	}
	good := deadLetter(t, p, "acme", data, "application/json", "NOT_FOUND", "record gone")
	bad := deadLetter(t, p, "acme", []byte(`{"eventId":"evt-2"}`), "application/json", "missing_field", "tenant_id: is missing")

	// The replay is traced as part of the operator's trace.
	tctx, span := telemetry.NewForTest().Tracer("test").Start(ctx, "operator")
	res, err := d.Replay(tctx, "acme", good, time.Now())
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.EventID != "evt-1" || res.Seq == 0 || res.TraceID != span.SpanContext().TraceID().String() {
		t.Fatalf("replay = %+v", res)
	}
	ev, err := p.JS.Stream(ctx, p.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := ev.GetMsg(ctx, res.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != string(data) || m.Header.Get(natsx.HeaderReplayedFrom) == "" || m.Header.Get(event.HeaderError) != "" ||
		m.Header.Get(event.HeaderContentType) != "application/json" {
		t.Fatalf("republished message: headers %v body %s", m.Header, m.Data)
	}
	if _, err := d.Get(ctx, "acme", good); !errors.Is(err, natsx.ErrDeadLetterNotFound) {
		t.Fatalf("the DLQ copy stayed after the replay: %v", err)
	}

	_, err = d.Replay(ctx, "acme", bad, time.Now())
	var inv *natsx.InvalidError
	if !errors.As(err, &inv) || event.CodeOf(err) != event.CodeMissingField || !strings.Contains(err.Error(), "still invalid") {
		t.Fatalf("replay of an invalid event: %v", err)
	}
	if _, err := d.Get(ctx, "acme", bad); err != nil {
		t.Fatalf("a refused replay removed the dead letter: %v", err)
	}
}

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
	backlog := func(tenant string) natsx.Backlog {
		t.Helper()
		b, err := natsx.TenantBacklog(ctx, p.JS, p.Topology, tenant)
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

	c, err := natsx.EnsurePusherConsumer(ctx, p.JS, p.Topology)
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
