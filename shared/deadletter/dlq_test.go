package deadletter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/deadletter"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/telemetry"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deadLetter stores a DLQ copy the way the pusher writes one.
func deadLetter(t *testing.T, p *natsx.Provisioned, tenant string, data []byte, contentType, code, reason string) uint64 {
	t.Helper()
	m := nats.NewMsg(p.Topology.DLQSubject(tenant))
	m.Data = data
	m.Header.Set(event.HeaderContentType, contentType)
	m.Header.Set(event.HeaderError, reason)
	m.Header.Set(event.HeaderErrorCode, code)
	m.Header.Set(deadletter.HeaderErrorClass, "invalid")
	m.Header.Set(deadletter.HeaderOriginalSubject, p.Topology.EventsSubject(tenant))
	m.Header.Set(deadletter.HeaderStreamSequence, "7")
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
	d := deadletter.DLQ{JS: p.JS, Topology: p.Topology}

	s1 := deadLetter(t, p, "acme", validEvent(t, "evt-1", "acme"), "application/json", "NOT_FOUND", "record gone")
	s2 := deadLetter(t, p, "globex", []byte("garbage"), "application/protobuf", "undecodable", "body: not a valid protobuf")
	s3 := deadLetter(t, p, "acme", []byte(`{"eventId":"evt-3","nope":1}`), "application/json", "undecodable", "unknown field")

	var all []deadletter.DeadLetter
	if err := d.List(ctx, "", func(dl deadletter.DeadLetter) error { all = append(all, dl); return nil }); err != nil {
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
	if err := d.List(ctx, "acme", func(dl deadletter.DeadLetter) error { acme = append(acme, dl.Seq); return nil }); err != nil {
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
	if _, err := d.Get(ctx, "acme", s2); !errors.Is(err, deadletter.ErrDeadLetterNotFound) {
		t.Fatalf("get globex's message as acme: %v", err)
	}
	if err := d.Delete(ctx, "acme", s2); !errors.Is(err, deadletter.ErrDeadLetterNotFound) {
		t.Fatalf("delete globex's message as acme: %v", err)
	}
	if err := d.Delete(ctx, "acme", s3); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "acme", s3); !errors.Is(err, deadletter.ErrDeadLetterNotFound) {
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
	d := deadletter.DLQ{JS: p.JS, Topology: p.Topology}

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
	if string(m.Data) != string(data) || m.Header.Get(deadletter.HeaderReplayedFrom) == "" || m.Header.Get(event.HeaderError) != "" ||
		m.Header.Get(event.HeaderContentType) != "application/json" {
		t.Fatalf("republished message: headers %v body %s", m.Header, m.Data)
	}
	if _, err := d.Get(ctx, "acme", good); !errors.Is(err, deadletter.ErrDeadLetterNotFound) {
		t.Fatalf("the DLQ copy stayed after the replay: %v", err)
	}

	_, err = d.Replay(ctx, "acme", bad, time.Now())
	var inv *deadletter.InvalidError
	if !errors.As(err, &inv) || event.CodeOf(err) != event.CodeMissingField || !strings.Contains(err.Error(), "still invalid") {
		t.Fatalf("replay of an invalid event: %v", err)
	}
	if _, err := d.Get(ctx, "acme", bad); err != nil {
		t.Fatalf("a refused replay removed the dead letter: %v", err)
	}
}
