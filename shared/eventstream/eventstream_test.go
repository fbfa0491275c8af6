package eventstream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
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

// TestSubjectRootsAreTheEventContracts: natsx spells the subject roots out
// (it imports no domain package); they must stay the prefixes the event
// package validates and documents.
func TestSubjectRootsAreTheEventContracts(t *testing.T) {
	for _, c := range []struct{ root, prefix string }{
		{natsx.EventsRoot, event.EventsPrefix},
		{natsx.DLQRoot, event.DLQPrefix},
		{natsx.AppliedRoot, event.AppliedPrefix},
		{natsx.AuditRoot, event.AuditPrefix},
		{natsx.ControlRoot, event.ControlPrefix},
	} {
		if c.root+"." != c.prefix {
			t.Errorf("natsx root %q; the event contract's prefix is %q", c.root, c.prefix)
		}
	}
	if got, want := natsx.DefaultTopology().EventsSubject("acme"), event.Subject("acme"); got != want {
		t.Errorf("events subject %q; event.Subject says %q", got, want)
	}
}

// TestEnsurePusherConsumerUpdatesItsSettingsInPlace: a changed
// OPTOUT_MAX_ACK_PENDING reaches the consumer a pusher already made.
func TestEnsurePusherConsumerUpdatesItsSettingsInPlace(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))
	topo := p.Topology
	topo.PusherMaxAckPending = 7
	if _, err := eventstream.EnsurePusherConsumer(ctx, p.JS, topo); err != nil {
		t.Fatal(err)
	}
	topo.PusherMaxAckPending = 9
	c, err := eventstream.EnsurePusherConsumer(ctx, p.JS, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.MaxAckPending; got != 9 {
		t.Errorf("consumer MaxAckPending = %d; want the updated 9", got)
	}
}

// readmeJSON is the README's example, published as `nats pub` would.
const readmeJSON = `{"eventId":"evt-0001","tenantId":"acme","person":{"salesConnectId":"sc-42","salesforceId":"%s","objectType":"CONTACT"},"action":"UNSUBSCRIBE","occurredAt":"2026-11-28T12:00:00Z","source":"EMAIL_LINK","reason":"clicked unsubscribe"}`

func TestJSONEventPublishedLikeTheREADMEIsDecodedAndDeduplicated(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	topo := p.Topology

	body := fmt.Sprintf(readmeJSON, "0035g00000AbCdEAAV")
	subject := topo.EventsSubject("acme")
	for i := 0; i < 2; i++ { // the second is a replay inside the duplicate window
		msg := nats.NewMsg(subject)
		msg.Header.Set("Content-Type", "application/json")
		msg.Header.Set("Nats-Msg-Id", "evt-0001")
		msg.Data = []byte(body)
		ack, err := p.JS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if want := i == 1; ack.Duplicate != want {
			t.Errorf("publish %d: Duplicate = %v; want %v", i, ack.Duplicate, want)
		}
	}
	s, err := p.JS.Stream(ctx, topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages; want the event stored once", info.State.Msgs)
	}

	tenants, err := natsx.EventTenants(ctx, p.JS, topo)
	if err != nil || len(tenants) != 1 || tenants[0] != "acme" {
		t.Fatalf("EventTenants = %v, %v; want [acme]", tenants, err)
	}
	cons, err := eventstream.EnsurePusherConsumer(ctx, p.JS, topo)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tenant, ok := topo.TenantFromEventsSubject(got.Subject())
	if !ok {
		t.Fatalf("subject %q not recognised as an events subject", got.Subject())
	}
	ev, err := event.Decode(event.Subject(tenant), got.Data(), got.Headers(), time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("decode the README's JSON: %v", err)
	}
	if ev.GetEventId() != "evt-0001" || ev.GetTenantId() != "acme" || ev.GetPerson().GetSalesforceId() != "0035g00000AbCdEAAV" {
		t.Errorf("decoded %v", ev)
	}
	_ = got.Ack()
}
