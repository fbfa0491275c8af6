package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/ingest"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// TestDrainSettlesAnEventWhoseDeadLetterCannotBeWritten: the reconciler's
// drain meets an invalid event while no DLQ copy can be written (no DLQ
// stream). It folds everything else, reports the lost copy, and a second
// drain finds nothing waiting: the event is settled, not redelivered, and
// the events stream still holds it.
func TestDrainSettlesAnEventWhoseDeadLetterCannotBeWritten(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := natstest.Provision(t, natstest.Connect(t))
	if err := p.JS.DeleteStream(ctx, p.Topology.DLQStream()); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	in := &ingest.Ingester{Ledger: l, Topology: p.Topology,
		DLQ:   natsx.DeadLetterer{JS: p.JS, Topology: p.Topology, Attempts: 2, Backoff: time.Millisecond},
		Field: func(string) string { return tenant.StandardField }}

	bad := nats.NewMsg(p.Topology.EventsSubject("acme"))
	bad.Header.Set(event.HeaderContentType, event.ContentTypeProtobuf)
	bad.Data = []byte("\x0a\xff\xff\xff\xff\x0fgarbage")
	badAck, err := p.JS.PublishMsg(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	good, ctype, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: "evt-good", TenantId: "acme",
		Person: &optoutv1.Person{SalesConnectId: "sc-1"}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)),
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(p.Topology.EventsSubject("acme"))
	m.Header.Set(event.HeaderContentType, ctype)
	m.Data = good
	if _, err := p.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}

	n, w, err := in.Drain(ctx, p.JS, "acme", nil)
	if !errors.Is(err, natsx.ErrDeadLetterUnwritable) {
		t.Fatalf("drain: %v; want the lost copy reported as ErrDeadLetterUnwritable", err)
	}
	if n != 2 || w.Count != 0 {
		t.Errorf("drain handled %d events, %d still waiting; want both handled, none waiting", n, w.Count)
	}
	if e, _, err := l.Get(ctx, ledger.Key("acme", "sc-1", "")); err != nil || !e.OptedOut {
		t.Errorf("the valid event behind the invalid one: %+v, %v; want it folded", e, err)
	}

	n, w, err = in.Drain(ctx, p.JS, "acme", nil)
	if err != nil || n != 0 || w.Count != 0 {
		t.Errorf("second drain: %d handled, %d waiting, %v; want nothing: the invalid event settled, not redelivered", n, w.Count, err)
	}
	s, err := p.JS.Stream(ctx, p.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.GetMsg(ctx, badAck.Sequence)
	if err != nil || !bytes.Equal(kept.Data, bad.Data) {
		t.Fatalf("events stream at sequence %d: %v; want the invalid event kept", badAck.Sequence, err)
	}
}
