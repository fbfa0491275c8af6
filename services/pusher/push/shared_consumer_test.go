package push_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// consumers lists the events stream's consumers.
func (s *stack) consumers() []string {
	s.t.Helper()
	st, err := s.Prov.JS.Stream(s.Ctx, s.Topo.EventsStream())
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	l := st.ConsumerNames(s.Ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// TestOneConsumerServesFiftyTenants: a replica serving 50 tenants reads
// them all through one consumer on the events stream, and every tenant's
// opt-outs reach its Salesforce org and are acknowledged.
func TestOneConsumerServesFiftyTenants(t *testing.T) {
	t.Parallel()
	const tenants, each = 50, 4
	var many []sandbox.OrgConfig
	for i := range tenants {
		n := fmt.Sprintf("t%02d", i)
		many = append(many, sandbox.OrgConfig{Name: n, ClientID: n + "-id", ClientSecret: n + "-secret",
			APIVersions: []string{"62.0"}, DailyAPILimit: 100000})
	}
	s := newStackOf(t, 90*time.Second, many)
	s.start(fastConfig())
	ids := map[string][]string{}
	// Published round-robin, as tenants' events arrive interleaved.
	for j := range each {
		for _, o := range many {
			id := s.seed(o.Name, "Contact")
			ids[o.Name] = append(ids[o.Name], id)
			s.publish(o.Name, fmt.Sprintf("sc-%d", j), sfID(id))
		}
	}
	s.Eventually("every tenant's opt-outs in Salesforce", 60*time.Second, func() bool {
		for tn, list := range ids {
			for _, id := range list {
				if !s.optedOut(tn, id, std) {
					return false
				}
			}
		}
		return true
	})
	if got := s.consumers(); !slices.Equal(got, []string{s.Topo.PusherConsumer()}) {
		t.Errorf("consumers on the events stream: %v; want only %s", got, s.Topo.PusherConsumer())
	}
	for _, o := range many {
		s.Eventually(o.Name+"'s backlog settled", 10*time.Second, func() bool { return s.Drained(o.Name) })
	}
	info := s.consumerInfo()
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != tenants*each {
		t.Errorf("consumer: %d unacked, %d pending, ack floor %d; want every one of the %d events acked", info.NumAckPending, info.NumPending, info.AckFloor.Stream, tenants*each)
	}
}

// TestBurstAmongOtherTenantsFillsBatchesAndALoneOptOutGoesAtOnce: the
// consumer is shared, so its pending count says nothing about one
// tenant; a tenant's burst, interleaved with another tenant's, still fills
// whole batches while the pusher runs, and a lone opt-out afterwards is
// written at once although a batch may linger for 5 s.
func TestBurstAmongOtherTenantsFillsBatchesAndALoneOptOutGoesAtOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := fastConfig()
	cfg.Linger = 5 * time.Second
	s.start(cfg)
	// Warm up: the runners, tokens and field checks exist before timing.
	for _, tn := range []string{"acme", "globex"} {
		id := s.seed(tn, "Contact")
		s.publish(tn, "warm", sfID(id))
		s.Eventually(tn+" warmed up", 15*time.Second, func() bool { return s.optedOut(tn, id, std) })
	}
	before := s.writeCalls("acme")

	// Both tenants' bursts, interleaved, published at once (async), as a
	// publisher's backlog arrives.
	const n = 400
	var acme []string
	for i := range n {
		a := s.seed("acme", "Contact")
		acme = append(acme, a)
		s.publishAsync("acme", fmt.Sprintf("burst-%d", i), a)
		s.publishAsync("globex", fmt.Sprintf("burst-%d", i), s.seed("globex", "Contact"))
	}
	select {
	case <-s.Prov.JS.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("the burst was not acknowledged")
	}
	s.Eventually("acme's burst in Salesforce", 30*time.Second, func() bool {
		for _, id := range acme {
			if !s.optedOut("acme", id, std) {
				return false
			}
		}
		return true
	})
	// 2 full batches; one or two more when the machine stalls mid-burst
	// (make test runs every package at once on 2 cores): batches still
	// average 100 records or more, against one call per opt-out without
	// them.
	if calls := s.writeCalls("acme") - before; calls > 4 {
		t.Errorf("%d Collections calls for acme's %d opt-outs; want whole batches of 200 (2, 4 at most)", calls, n)
	}

	s.Eventually("the burst settled", 30*time.Second, func() bool { return s.Settled("acme") && s.Settled("globex") })
	lone := s.seed("acme", "Contact")
	start := time.Now()
	s.publish("acme", "lone", sfID(lone))
	s.Eventually("the lone opt-out in Salesforce", 10*time.Second, func() bool { return s.optedOut("acme", lone, std) })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a lone opt-out took %s to reach Salesforce; want it written at once, not after the 5 s linger", took)
	}
}

// TestUpgradeFromPerTenantConsumers: a deployment of the earlier version
// has acme's consumer pusher_acme, which settled acme's first two events
// (acked here without folding them, so a refold would show in the ledger).
// The pusher starts: it folds and writes the two events that consumer had
// not settled and globex's, which no pusher had pulled yet, leaves the
// first two alone, and deletes pusher_acme.
func TestUpgradeFromPerTenantConsumers(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	var acme []string
	for i := range 4 {
		id := s.seed("acme", "Contact")
		acme = append(acme, id)
		s.publish("acme", fmt.Sprintf("sc-%d", i), sfID(id))
	}
	g := s.seed("globex", "Contact")
	s.publish("globex", "sc-g", sfID(g))
	old, err := s.Prov.JS.CreateOrUpdateConsumer(s.Ctx, s.Topo.EventsStream(), jetstream.ConsumerConfig{
		Durable: "pusher_acme", FilterSubject: s.Topo.EventsSubject("acme"),
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := old.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(s.Ctx); err != nil {
			t.Fatal(err)
		}
	}

	s.start(fastConfig())
	s.Eventually("the unsettled opt-outs in Salesforce", 20*time.Second, func() bool {
		return s.optedOut("acme", acme[2], std) && s.optedOut("acme", acme[3], std) && s.optedOut("globex", g, std)
	})
	s.Eventually("pusher_acme deleted", 10*time.Second, func() bool {
		return slices.Equal(s.consumers(), []string{s.Topo.PusherConsumer()})
	})
	for i, id := range acme[:2] {
		if _, err := s.Ledger.Get(s.Ctx, optout.Key("acme", fmt.Sprintf("sc-%d", i), "")); !errors.Is(err, ledger.ErrNotFound) || s.optedOut("acme", id, std) {
			t.Errorf("acme's event %d, settled by pusher_acme, was folded again (ledger: %v)", i, err)
		}
	}
}

// TestEventOfAMalformedTenantTokenIsDeadLettered: an event published on a
// subject whose tenant token is no tenant id reaches the shared consumer
// like any other; it is dead-lettered (on the "unknown" DLQ subject) and
// acknowledged, and other tenants' events around it are pushed.
func TestEventOfAMalformedTenantTokenIsDeadLettered(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start(fastConfig())
	before := s.seed("globex", "Contact")
	s.publish("globex", "sc-before", sfID(before))
	ack := s.publishRaw("ac!me", validBody(t, "evt-bad-token", "ac!me"), nil)
	after := s.seed("globex", "Contact")
	s.publish("globex", "sc-after", sfID(after))

	s.Eventually("dead-lettered", 15*time.Second, func() bool { return len(s.dlq("unknown")) == 1 })
	d := s.dlq("unknown")[0]
	if d.Header.Get(deadletter.HeaderStreamSequence) != fmt.Sprint(ack.Sequence) || d.Header.Get(deadletter.HeaderOriginalSubject) != s.Topo.EventsSubject("ac!me") {
		t.Errorf("DLQ copy headers %v; want the original's sequence %d and subject", d.Header, ack.Sequence)
	}
	s.Eventually("globex's opt-outs in Salesforce", 15*time.Second, func() bool {
		return s.optedOut("globex", before, std) && s.optedOut("globex", after, std)
	})
	s.Eventually("every event acknowledged", 10*time.Second, func() bool {
		info := s.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	})
}

// publishAsync sends an opt-out of person sc (Salesforce id sf) without
// waiting for its acknowledgement.
func (s *stack) publishAsync(tenantID, sc, sf string) {
	s.t.Helper()
	id := fmt.Sprintf("evt-%d", s.seq.Add(1))
	data, ctype, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: id, TenantId: tenantID,
		Person: &optoutv1.Person{SalesConnectId: sc, SalesforceId: sf}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Second)), Source: optoutv1.Source_EMAIL_LINK,
	}, false)
	if err != nil {
		s.t.Fatal(err)
	}
	m := natsMsg(s.Topo.EventsSubject(tenantID), data, ctype)
	m.Header.Set("Nats-Msg-Id", id)
	if _, err := s.Prov.JS.PublishMsgAsync(m); err != nil {
		s.t.Fatal(err)
	}
}

// validBody is a well-formed opt-out claiming tenant tenantID (protobuf).
func validBody(t *testing.T, id, tenantID string) []byte {
	t.Helper()
	data, _, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: id, TenantId: tenantID,
		Person: &optoutv1.Person{SalesConnectId: "sc-1"}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)),
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
