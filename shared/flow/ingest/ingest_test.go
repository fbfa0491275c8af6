package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/ingest"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

type fixture struct {
	t   *testing.T
	ctx context.Context
	p   *natsx.Provisioned
	l   *ledger.Ledger
	in  *ingest.Ingester
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	l, err := ledger.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	in := &ingest.Ingester{Ledger: l, Topology: p.Topology,
		DLQ:   deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Attempts: 2, Backoff: time.Millisecond},
		Field: func(string) string { return tenant.StandardField }}
	return &fixture{t: t, ctx: ctx, p: p, l: l, in: in}
}

// publish stores an opt-out of person sc in tenant.
func (f *fixture) publish(tn, id, sc string) uint64 {
	f.t.Helper()
	data, ctype, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: id, TenantId: tn,
		Person: &optoutv1.Person{SalesConnectId: sc}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)),
	}, true)
	if err != nil {
		f.t.Fatal(err)
	}
	m := nats.NewMsg(f.p.Topology.EventsSubject(tn))
	m.Header.Set(event.HeaderContentType, ctype)
	m.Data = data
	return f.store(m)
}

// publishGarbage stores an event no decoder accepts.
func (f *fixture) publishGarbage(tn string) uint64 {
	f.t.Helper()
	m := nats.NewMsg(f.p.Topology.EventsSubject(tn))
	m.Header.Set(event.HeaderContentType, event.ContentTypeProtobuf)
	m.Data = []byte("\x0a\xff\xff\xff\xff\x0fgarbage")
	return f.store(m)
}

func (f *fixture) store(m *nats.Msg) uint64 {
	f.t.Helper()
	ack, err := f.p.JS.PublishMsg(f.ctx, m)
	if err != nil {
		f.t.Fatal(err)
	}
	return ack.Sequence
}

func (f *fixture) optedOut(tn, sc string) bool {
	it, err := f.l.Get(f.ctx, optout.Key(tn, sc, ""))
	e := it.Entry
	return err == nil && e.OptedOut
}

// streamState is a stream's last sequence and message count.
func (f *fixture) streamState(name string) (uint64, uint64) {
	f.t.Helper()
	s, err := f.p.JS.Stream(f.ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	st := s.CachedInfo().State
	return st.LastSeq, st.Msgs
}

// pusherState is what the pusher's consumer says.
func (f *fixture) pusherState() (floor, delivered uint64, ackPending int, pending uint64) {
	f.t.Helper()
	c, err := f.p.JS.Consumer(f.ctx, f.p.Topology.EventsStream(), f.p.Topology.PusherConsumer())
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := c.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return info.AckFloor.Stream, info.Delivered.Stream, info.NumAckPending, info.NumPending
}

func (f *fixture) dlqMsgs() uint64 {
	_, n := f.streamState(f.p.Topology.DLQStream())
	return n
}

// TestDrainFoldsWhatThePusherHasNotSettled: the pusher (stopped) settled
// acme's first event and holds its second unacked; the rest wait. The
// reconciler's drain of acme folds every acme event past the pusher's ack
// floor, through its own consumer: globex's events stay unfolded, the
// pusher's consumer is left as it was, and the invalid event is left to
// the pusher (no DLQ copy). Then the pusher folds the same events again:
// they are acked, and the ledger and its audit trail get nothing new.
func TestDrainFoldsWhatThePusherHasNotSettled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.publish("acme", "a1", "sc-1")   // 1
	f.publish("globex", "g1", "sc-g") // 2
	f.publish("acme", "a2", "sc-2")   // 3
	f.publishGarbage("acme")          // 4
	f.publish("acme", "a3", "sc-3")   // 5
	f.publish("globex", "g2", "sc-h") // 6

	pusher, err := eventstream.EnsurePusherConsumer(f.ctx, f.p.JS, f.p.Topology)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := pusher.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var held []jetstream.Msg
	for m := range batch.Messages() {
		held = append(held, m)
	}
	if len(held) != 3 {
		t.Fatalf("the pusher fetched %d events; want 3", len(held))
	}
	// a1 settled by the pusher; g1 and a2 delivered, not acked.
	if _, err := f.in.Handle(f.ctx, "acme", held[0], false); err != nil {
		t.Fatal(err)
	}
	// The ack is fire-and-forget: the server applies it a moment later.
	floor, delivered, ackPending, pending := f.pusherState()
	for deadline := time.Now().Add(5 * time.Second); floor == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		floor, delivered, ackPending, pending = f.pusherState()
	}
	if floor != 1 || delivered != 3 || ackPending != 2 || pending != 3 {
		t.Fatalf("pusher consumer: floor %d, delivered %d, %d unacked, %d pending; want 1, 3, 2, 3", floor, delivered, ackPending, pending)
	}
	w, err := f.in.Waiting(f.ctx, f.p.JS, "acme")
	if err != nil || w.Count != 3 || w.Oldest.IsZero() {
		t.Fatalf("acme waiting before the drain: %+v, %v; want a2, the garbage and a3 (3), with the oldest's time", w, err)
	}
	dlqBefore := f.dlqMsgs()

	var seen []string
	d, err := f.in.Drain(f.ctx, f.p.JS, "acme", func(r ingest.Result) { seen = append(seen, r.Key) })
	if err != nil {
		t.Fatal(err)
	}
	if d != (ingest.Drained{Folded: 2, Invalid: 1}) || len(seen) != 3 {
		t.Errorf("drain = %+v (%d handled); want a2 and a3 folded, the garbage left", d, len(seen))
	}
	for _, sc := range []string{"sc-1", "sc-2", "sc-3"} {
		if !f.optedOut("acme", sc) {
			t.Errorf("acme %s not opted out in the ledger after the drain", sc)
		}
	}
	for _, sc := range []string{"sc-g", "sc-h"} {
		if f.optedOut("globex", sc) {
			t.Errorf("globex %s was folded by acme's drain", sc)
		}
	}
	if got := f.dlqMsgs(); got != dlqBefore {
		t.Errorf("the drain wrote %d dead letters; want none: the pusher writes them", got-dlqBefore)
	}
	if f2, d2, a2, p2 := f.pusherState(); f2 != floor || d2 != delivered || a2 != ackPending || p2 != pending {
		t.Errorf("the drain moved the pusher's consumer: floor %d, delivered %d, %d unacked, %d pending", f2, d2, a2, p2)
	}
	if st, _ := f.p.JS.Stream(f.ctx, f.p.Topology.EventsStream()); st.CachedInfo().State.Consumers != 1 {
		t.Errorf("%d consumers on the events stream after the drain; want the pusher's only (the drain's deleted)", st.CachedInfo().State.Consumers)
	}
	// Drained again, nothing is new.
	if d, err := f.in.Drain(f.ctx, f.p.JS, "acme", nil); err != nil || d != (ingest.Drained{AlreadyFolded: 2, Invalid: 1}) {
		t.Errorf("second drain = %+v, %v; want a2 and a3 found folded already", d, err)
	}

	// The pusher resumes: everything is folded again and acked; only the
	// garbage reaches the DLQ, and the ledger writes nothing.
	if err := ledger.WaitAudited(f.ctx, f.p.JS, f.p.Topology); err != nil {
		t.Fatal(err)
	}
	ledgerLast, _ := f.streamState("KV_" + f.p.Topology.LedgerBucket())
	_, audited := f.streamState(f.p.Topology.AuditStream())
	for _, m := range held[1:] {
		tn, _ := f.p.Topology.TenantFromEventsSubject(m.Subject())
		if tn == "acme" {
			if res, err := f.in.Handle(f.ctx, tn, m, false); err != nil || res.Changed {
				t.Errorf("the pusher's fold of a2 after the drain: changed %v, %v; want no change", res.Changed, err)
			}
		} else {
			_ = m.Nak() // globex is not this test's
		}
	}
	rest, err := pusher.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range rest.Messages() {
		tn, _ := f.p.Topology.TenantFromEventsSubject(m.Subject())
		if tn != "acme" {
			continue
		}
		if res, err := f.in.Handle(f.ctx, tn, m, false); err != nil || res.Changed {
			t.Errorf("the pusher's fold of %s after the drain: changed %v, %v; want no change", m.Subject(), res.Changed, err)
		}
	}
	if got := f.dlqMsgs() - dlqBefore; got != 1 {
		t.Errorf("%d dead letters after the pusher; want the garbage's one", got)
	}
	if err := ledger.WaitAudited(f.ctx, f.p.JS, f.p.Topology); err != nil {
		t.Fatal(err)
	}
	if last, _ := f.streamState("KV_" + f.p.Topology.LedgerBucket()); last != ledgerLast {
		t.Errorf("the pusher's refold wrote %d ledger revisions; want none", last-ledgerLast)
	}
	if _, n := f.streamState(f.p.Topology.AuditStream()); n != audited {
		t.Errorf("the pusher's refold added %d audit records; want none", n-audited)
	}
}

// TestDrainWithoutAPusherFoldsEveryStoredEvent: before any pusher ran (no
// consumer), the drain folds every event of the tenant, and stops at the
// last event stored when it began.
func TestDrainWithoutAPusherFoldsEveryStoredEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 450 // more than one fetch
	for i := range n {
		f.publish("acme", fmt.Sprintf("e%d", i), fmt.Sprintf("sc-%d", i))
	}
	f.publish("globex", "g1", "sc-g")
	d, err := f.in.Drain(f.ctx, f.p.JS, "acme", nil)
	if err != nil || d != (ingest.Drained{Folded: n}) {
		t.Fatalf("drain = %+v, %v; want %d folded", d, err, n)
	}
	for i := range n {
		if !f.optedOut("acme", fmt.Sprintf("sc-%d", i)) {
			t.Fatalf("acme sc-%d not folded", i)
		}
	}
	if f.optedOut("globex", "sc-g") {
		t.Error("globex folded by acme's drain")
	}
	if d, err := f.in.Drain(f.ctx, f.p.JS, "nobody", nil); err != nil || d != (ingest.Drained{}) {
		t.Errorf("drain of a tenant without events = %+v, %v", d, err)
	}
}

// TestAHeldEventOwesThePushUntilSettled: folded with hold, an opt-out that
// leaves its person dirty puts no dirty marker and stays unacked, so if
// its holder dies it comes back (a no-op refold, held again) until a
// holder settles it; one folded without hold is marked and acked at once.
// An event that leaves its person clean is acked whatever the hold.
func TestAHeldEventOwesThePushUntilSettled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	topo := f.p.Topology
	topo.PusherAckWait = time.Second
	pusher, err := eventstream.EnsurePusherConsumer(f.ctx, f.p.JS, topo)
	if err != nil {
		t.Fatal(err)
	}
	optOut := &optoutv1.OptOutEvent{EventId: "a1", TenantId: "acme", Action: optoutv1.Action_UNSUBSCRIBE,
		Person:     &optoutv1.Person{SalesConnectId: "sc-1", SalesforceId: "003000000000001AAA", ObjectType: optoutv1.ObjectType_CONTACT},
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute))}
	resub := &optoutv1.OptOutEvent{EventId: "r1", TenantId: "acme", Action: optoutv1.Action_RESUBSCRIBE,
		Person:     &optoutv1.Person{SalesConnectId: "sc-2", SalesforceId: "003000000000002AAA", ObjectType: optoutv1.ObjectType_CONTACT},
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute))}
	for _, ev := range []*optoutv1.OptOutEvent{optOut, resub} {
		data, ctype, err := event.Encode(ev, true)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(topo.EventsSubject("acme"))
		m.Header.Set(event.HeaderContentType, ctype)
		m.Data = data
		f.store(m)
	}
	next := func(want string) jetstream.Msg {
		t.Helper()
		batch, err := pusher.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			return m
		}
		t.Fatalf("no delivery of the %s", want)
		return nil
	}
	unacked := func(want int) {
		t.Helper()
		// Acks are not waited for: give the server a moment to count them.
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, _, n, _ := f.pusherState()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d events unacked; want %d", n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	markers := func() int {
		n := 0
		if err := f.l.Dirty(f.ctx, "acme", func(ledger.DirtyItem) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	res, err := f.in.Handle(f.ctx, "acme", next("opt-out"), true)
	if err != nil || !res.At.Held || !res.Dirty || !res.Changed {
		t.Fatalf("held fold of the opt-out: %+v, %v; want it folded, dirty and held", res, err)
	}
	if n := markers(); n != 0 {
		t.Fatalf("%d dirty markers after a held fold; want none (the unacked event owes the push)", n)
	}
	res, err = f.in.Handle(f.ctx, "acme", next("resubscribe"), true)
	if err != nil || res.At.Held || res.Dirty {
		t.Fatalf("held fold of a resubscribe that leaves the person clean: %+v, %v; want it acked, not held", res, err)
	}
	unacked(1) // the opt-out alone

	// Its holder died: after AckWait the opt-out comes back, is folded
	// again without effect, and is held again.
	res, err = f.in.Handle(f.ctx, "acme", next("opt-out's redelivery"), true)
	if err != nil || !res.At.Held || res.Changed {
		t.Fatalf("held refold of the redelivery: %+v, %v; want a held no-op", res, err)
	}
	if it, _ := f.l.Get(f.ctx, optout.Key("acme", "sc-1", "")); len(it.Entry.RecentEvents) != 1 || markers() != 0 {
		t.Fatalf("after the redelivery: %d events applied, %d markers; want 1 and none", len(it.Entry.RecentEvents), markers())
	}

	// A holder without room folds the next redelivery with its marker.
	res, err = f.in.Handle(f.ctx, "acme", next("opt-out's second redelivery"), false)
	if err != nil || res.At.Held {
		t.Fatalf("fold without hold: %+v, %v; want it acked", res, err)
	}
	if n := markers(); n != 1 {
		t.Fatalf("%d dirty markers after the fold without hold; want the person's", n)
	}
	unacked(0)
}
