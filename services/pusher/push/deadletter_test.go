package push_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// undecodable is a body no event decodes from.
var undecodable = []byte("\x0a\xff\xff\xff\xff\x0fgarbage")

// publishRaw stores an events-subject message as a publisher outside
// optout-sync would send it, with its own headers.
func (s *stack) publishRaw(tenantID string, body []byte, header map[string]string) *jetstream.PubAck {
	s.t.Helper()
	m := natsMsg(s.Topo.EventsSubject(tenantID), body, "application/protobuf")
	for k, v := range header {
		m.Header.Set(k, v)
	}
	ack, err := s.Prov.JS.PublishMsg(s.Ctx, m)
	if err != nil {
		s.t.Fatal(err)
	}
	return ack
}

// consumerInfo is the pusher's consumer's state: every tenant's, and the
// test's namespace has only the test's events.
func (s *stack) consumerInfo() *jetstream.ConsumerInfo {
	s.t.Helper()
	c, err := s.Prov.JS.Consumer(s.Ctx, s.Topo.EventsStream(), s.Topo.PusherConsumer())
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := c.Info(s.Ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return info
}

// syncBuffer collects a pusher's log lines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startLogged runs a pusher replica like start, keeping what it logs.
func (s *stack) startLogged(cfg push.Config) *syncBuffer {
	s.t.Helper()
	logs := &syncBuffer{}
	s.startIn(s.Ctx, cfg, s.Clients, func(svc *push.Service) {
		svc.Log = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(s.t), logs)).Level(zerolog.WarnLevel)
	})
	return logs
}

const publisherTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// TestInvalidEventSentWithNatsHeadersIsDeadLetteredOnce: a publisher that
// steers its publish with Nats-* headers (accepted: they match the events
// stream) sends an event that cannot be decoded. It lands in the DLQ once,
// without those headers, and the consumer settles.
func TestInvalidEventSentWithNatsHeadersIsDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	const tenantID = "dlqheaders"
	s := newStack(t)
	before := counter(t, "optout_dead_lettered", tenantID) // the meter outlives a test (-count)
	s.start(fastConfig())
	ack := s.publishRaw(tenantID, undecodable, map[string]string{
		"Nats-Expected-Stream": s.Topo.EventsStream(),
		"Nats-Msg-Id":          "evt-undecodable",
		"traceparent":          publisherTrace,
		"X-Publisher":          "sales-connect",
	})

	s.Eventually("dead-lettered and settled", 15*time.Second, func() bool {
		return s.Drained(tenantID) && len(s.dlq(tenantID)) > 0
	})
	d := s.dlq(tenantID)
	if len(d) != 1 {
		t.Fatalf("DLQ holds %d copies; want exactly 1", len(d))
	}
	h := d[0].Header
	for k := range h {
		if strings.HasPrefix(k, "Nats-") && k != "Nats-Msg-Id" {
			t.Errorf("the DLQ copy carries the original's %s: %v", k, h[k])
		}
	}
	if id := h.Get("Nats-Msg-Id"); id == "" || id == "evt-undecodable" {
		t.Errorf("copy's Nats-Msg-Id = %q; want its own", id)
	}
	if h.Get(event.HeaderErrorCode) != string(event.CodeUndecodable) || h.Get(deadletter.HeaderStreamSequence) != fmt.Sprint(ack.Sequence) ||
		h.Get("X-Publisher") != "sales-connect" || !bytes.Equal(d[0].Data, undecodable) {
		t.Errorf("DLQ copy: headers %v body %q", h, d[0].Data)
	}
	if got, want := natsx.TraceID(h), publisherTrace[3:35]; got != want {
		t.Errorf("copy's trace id = %q; want the publisher's %s", got, want)
	}
	if info := s.consumerInfo(); info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Errorf("consumer delivered %d times (%d redelivered); want the event delivered once", info.Delivered.Consumer, info.NumRedelivered)
	}
	if got := counter(t, "optout_dead_lettered", tenantID) - before; got != 1 {
		t.Errorf("optout_dead_lettered{tenant=%s} rose by %d; want 1", tenantID, got)
	}
}

// TestUnwritableDeadLetterIsReportedAndNotRedelivered: when no copy of an
// invalid event can be written (here: no DLQ stream), the event is settled
// after the bounded attempts, reported by a metric and an error log naming
// its sequence, and kept in the events stream; it is not redelivered.
func TestUnwritableDeadLetterIsReportedAndNotRedelivered(t *testing.T) {
	t.Parallel()
	const tenantID = "dlqlost"
	s := newStack(t)
	if err := s.Prov.JS.DeleteStream(s.Ctx, s.Topo.DLQStream()); err != nil {
		t.Fatal(err)
	}
	// Far longer than the attempts take: only the pusher's own settling,
	// never an expired ack, can deliver the event again.
	s.Topo.PusherAckWait = time.Minute
	before := counter(t, "optout_dead_letter_unwritable", tenantID)
	logs := s.startLogged(fastConfig())
	ack := s.publishRaw(tenantID, undecodable, nil)

	s.Eventually("the event settled", 30*time.Second, func() bool { return s.Drained(tenantID) })
	if info := s.consumerInfo(); info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Errorf("consumer delivered %d times (%d redelivered); want the event delivered once and settled", info.Delivered.Consumer, info.NumRedelivered)
	}
	if got := counter(t, "optout_dead_letter_unwritable", tenantID) - before; got != 1 {
		t.Errorf("optout_dead_letter_unwritable{tenant=%s} rose by %d; want 1", tenantID, got)
	}
	if l := logs.String(); !strings.Contains(l, "could not be copied to the DLQ") || !strings.Contains(l, fmt.Sprintf(`"stream_seq":%d`, ack.Sequence)) {
		t.Errorf("log does not report the lost copy with its sequence %d:\n%s", ack.Sequence, l)
	}
	// Nothing lost: the events stream still holds the event.
	st, err := s.Prov.JS.Stream(s.Ctx, s.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(s.Ctx, ack.Sequence)
	if err != nil || !bytes.Equal(m.Data, undecodable) {
		t.Fatalf("events stream at sequence %d: %v, %q; want the original kept", ack.Sequence, err, m.Data)
	}
}

// TestUnwritableDeadLetterOfAFailedPersonIsReported: a person given up on
// (a deleted record) whose DLQ copy cannot be written stays FAILED in the
// ledger, and the lost copy is reported.
func TestUnwritableDeadLetterOfAFailedPersonIsReported(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	if err := s.Prov.JS.DeleteStream(s.Ctx, s.Topo.DLQStream()); err != nil {
		t.Fatal(err)
	}
	before := counter(t, "optout_dead_letter_unwritable", "globex")
	s.start(fastConfig())
	deleted := s.seed("globex", "Contact")
	if err := s.Org("globex").Delete(deleted); err != nil {
		t.Fatal(err)
	}
	s.publish("globex", "gone-nodlq", sfID(deleted))

	s.Eventually("the lost copy reported", 30*time.Second, func() bool {
		return counter(t, "optout_dead_letter_unwritable", "globex") > before
	})
	s.Eventually("settled", 10*time.Second, func() bool { return s.Settled("globex") })
	if e := s.entry("globex", "gone-nodlq"); e.State != optout.StateFailed {
		t.Errorf("entry state = %s; want FAILED, the ledger's record of the give-up", e.State)
	}
	if got := counter(t, "optout_dead_letter_unwritable", "globex") - before; got != 1 {
		t.Errorf("optout_dead_letter_unwritable{tenant=globex} rose by %d; want 1", got)
	}
}
