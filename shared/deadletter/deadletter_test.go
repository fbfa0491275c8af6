package deadletter_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
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
)

// deadLetters lists every dead letter of the namespace, as optoutctl does.
func deadLetters(t *testing.T, p *natsx.Provisioned) []deadletter.DeadLetter {
	t.Helper()
	var out []deadletter.DeadLetter
	if err := (deadletter.DLQ{JS: p.JS, Topology: p.Topology}).List(ctxT(t), "", func(dl deadletter.DeadLetter) error {
		out = append(out, dl)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// stored publishes msg to the events stream and returns it as the stream
// holds it, which is what a consumer is delivered and dead-letters.
func stored(t *testing.T, p *natsx.Provisioned, msg *nats.Msg) *jetstream.RawStreamMsg {
	t.Helper()
	ctx := ctxT(t)
	ack, err := p.JS.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publish the original (%d header + %d body bytes): %v", wireHeaderLen(msg.Header), len(msg.Data), err)
	}
	s, err := p.JS.Stream(ctx, p.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wireHeaderLen is the size of h in a NATS message ("NATS/1.0" line, one
// "Key: value" line per value, blank line).
func wireHeaderLen(h nats.Header) int {
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestDeadLetterCopyDropsEveryNatsHeaderAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := natstest.Provision(t, natstest.Connect(t))

	// The original as its publisher sent it: steered by Nats-* headers
	// (accepted, since they matched the events stream), traced, typed.
	orig := nats.NewMsg(p.Topology.EventsSubject("acme"))
	orig.Data = []byte(`{"eventId":"evt-1","nope":1}`)
	orig.Header.Set("Content-Type", "application/json")
	orig.Header.Set("traceparent", traceParent)
	orig.Header.Set("X-Publisher", "sales-connect")
	orig.Header.Set("Nats-Msg-Id", "evt-1")
	orig.Header.Set("Nats-Expected-Stream", p.Topology.EventsStream())
	orig.Header.Set("Nats-Expected-Last-Sequence", "0")
	m := stored(t, p, orig)

	// Each of these would make the DLQ stream refuse (or drop, or purge
	// around) the copy if it travelled with it.
	h := nats.Header{}
	for k, v := range m.Header {
		h[k] = v
	}
	h.Set("Nats-Expected-Stream", "NOT_THE_DLQ")
	h.Set("Nats-Expected-Last-Sequence", "999")
	h.Set("Nats-Expected-Last-Subject-Sequence", "999")
	h.Set("Nats-Expected-Last-Msg-Id", "evt-0")
	h.Set("Nats-Rollup", "sub")
	h.Set("Nats-TTL", "1s")

	d := deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Backoff: time.Millisecond}
	letter := deadletter.Letter{Tenant: "acme", Subject: m.Subject, Seq: m.Sequence, Header: h, Data: m.Data,
		Cause: errors.New("unknown field \"nope\"\nat offset 18"), Code: "undecodable", Class: "invalid"}
	// A redelivered original is dead-lettered again: still one copy.
	for range 2 {
		if err := d.Write(ctx, letter); err != nil {
			t.Fatalf("write the dead letter: %v", err)
		}
	}

	dls := deadLetters(t, p)
	if len(dls) != 1 {
		t.Fatalf("DLQ holds %d copies; want exactly 1", len(dls))
	}
	dl := dls[0]
	for k := range dl.Header {
		if strings.HasPrefix(k, "Nats-") && k != "Nats-Msg-Id" {
			t.Errorf("the copy carries the original's %s: %v", k, dl.Header[k])
		}
	}
	if id := dl.Header.Get("Nats-Msg-Id"); id == "" || id == "evt-1" {
		t.Errorf("copy's Nats-Msg-Id = %q; want the copy's own, not the original's", id)
	}
	if dl.ContentType != "application/json" || dl.Header.Get("X-Publisher") != "sales-connect" {
		t.Errorf("copy headers = %v; want Content-Type and X-Publisher kept", dl.Header)
	}
	if got, want := natsx.TraceID(dl.Header), traceParent[3:35]; got != want {
		t.Errorf("copy's trace id = %q; want the original's %s (headers %v)", got, want, dl.Header)
	}
	if dl.Tenant != "acme" || dl.Code != "undecodable" || dl.Class != "invalid" || dl.Reason != `unknown field "nope" at offset 18` ||
		dl.OriginalSubject != m.Subject || dl.OriginalSeq != m.Sequence || dl.EventID != "evt-1" || !bytes.Equal(dl.Data, m.Data) {
		t.Errorf("dead letter = %+v body %q", dl, dl.Data)
	}
	if dl.Header.Get(deadletter.HeaderBodyTruncated) != "" || dl.Header.Get(deadletter.HeaderOriginalSize) != "" {
		t.Errorf("a body that fits was marked shrunk: %v", dl.Header)
	}
}

func TestDeadLetterOfABodyTooLargeToCopyKeepsItsSizeAndHash(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	maxPayload := int(nc.MaxPayload())
	if int(p.Topology.MaxMsgSize) < maxPayload {
		maxPayload = int(p.Topology.MaxMsgSize)
	}
	t.Logf("the largest message the server and the events stream accept: %d bytes", maxPayload)

	for i, tc := range []struct {
		name  string
		extra int // bytes of an ordinary header beside the body
	}{
		{"a body as large as the server accepts", 0},
		// Under the old fixed 8 KiB margin the body alone looked small enough.
		{"a body beside large headers", 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			tenant := "big" + strconv.Itoa(i)
			orig := nats.NewMsg(p.Topology.EventsSubject(tenant))
			orig.Header.Set("Content-Type", "application/protobuf")
			orig.Header.Set("Nats-Msg-Id", "evt-big-"+strconv.Itoa(i))
			if tc.extra > 0 {
				orig.Header.Set("X-Padding", strings.Repeat("p", tc.extra))
			}
			// The original fills the largest message exactly.
			body := paddedEvent(t, tenant, maxPayload-wireHeaderLen(orig.Header))
			orig.Data = body
			m := stored(t, p, orig)

			d := deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Backoff: time.Millisecond}
			err := d.Write(ctx, deadletter.Letter{Tenant: tenant, Subject: m.Subject, Seq: m.Sequence, Header: m.Header, Data: m.Data,
				Cause: errors.New("body: is too large"), Code: string(event.CodeTooLarge), Class: "invalid"})
			if err != nil {
				t.Fatalf("write the dead letter of a %d-byte body: %v", len(body), err)
			}
			var got []deadletter.DeadLetter
			for _, dl := range deadLetters(t, p) {
				if dl.Tenant == tenant {
					got = append(got, dl)
				}
			}
			if len(got) != 1 {
				t.Fatalf("DLQ holds %d copies; want 1", len(got))
			}
			dl := got[0]
			sum := sha256.Sum256(body)
			if dl.Header.Get(deadletter.HeaderOriginalSize) != strconv.Itoa(len(body)) ||
				dl.Header.Get(deadletter.HeaderOriginalSHA256) != hex.EncodeToString(sum[:]) ||
				dl.Header.Get(deadletter.HeaderBodyTruncated) != "true" {
				t.Errorf("copy of a %d-byte body with sha256 %x: size %q, sha256 %q, truncated %q", len(body), sum,
					dl.Header.Get(deadletter.HeaderOriginalSize), dl.Header.Get(deadletter.HeaderOriginalSHA256), dl.Header.Get(deadletter.HeaderBodyTruncated))
			}
			if len(dl.Data) == 0 || len(dl.Data) >= len(body) || !bytes.HasPrefix(body, dl.Data) {
				t.Errorf("copy's body is %d bytes; want a shorter prefix of the original's %d", len(dl.Data), len(body))
			}
			if dl.ContentType != "application/protobuf" || dl.OriginalSeq != m.Sequence || dl.Code != string(event.CodeTooLarge) {
				t.Errorf("dead letter = %+v", dl)
			}
			if tc.extra > 0 && dl.Header.Get("X-Padding") == "" {
				t.Error("the copy lost an ordinary header")
			}

			// A shrunk copy is not the event: replaying it is refused and
			// the copy stays.
			if _, err := (deadletter.DLQ{JS: p.JS, Topology: p.Topology}).Replay(ctx, tenant, dl.Seq, time.Now()); err == nil ||
				!strings.Contains(err.Error(), "truncated") {
				t.Errorf("replay of a shrunk copy: %v; want it refused as truncated", err)
			}
			if _, err := (deadletter.DLQ{JS: p.JS, Topology: p.Topology}).Get(ctx, tenant, dl.Seq); err != nil {
				t.Errorf("the shrunk copy is gone after a refused replay: %v", err)
			}
		})
	}
}

// paddedEvent is a valid protobuf event of tenant followed by unknown
// fields (a publisher on a newer schema) up to size bytes: far over the
// 64 KiB limit, while any even-length prefix past the event decodes as the
// event itself.
func paddedEvent(t *testing.T, tenant string, size int) []byte {
	t.Helper()
	data, _, err := event.Encode(&optoutv1.OptOutEvent{
		EventId: "evt-big", TenantId: tenant,
		Person: &optoutv1.Person{SalesConnectId: "sc-1"}, Action: optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)),
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%2 == 1 {
		data = append(data, 0x78, 0x80, 0x01) // field 15, varint 128: 3 bytes
	}
	for len(data) < size {
		data = append(data, 0x78, 0x01) // field 15, varint 1: 2 bytes
	}
	return data[:size]
}

func TestDeadLetterThatCannotBeWrittenIsTriedAttemptsTimesThenReported(t *testing.T) {
	t.Parallel()
	letter := func(p *natsx.Provisioned) deadletter.Letter {
		return deadletter.Letter{Tenant: "acme", Subject: p.Topology.EventsSubject("acme"), Seq: 3,
			Header: nats.Header{"Content-Type": {"application/json"}}, Data: []byte("{}"),
			Cause: errors.New("tenant_id: is missing"), Code: string(event.CodeMissingField), Class: "invalid"}
	}

	t.Run("the DLQ stream is full and refuses new messages", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		nc := natstest.Connect(t)
		p := natstest.Provision(t, nc)
		s, err := p.JS.Stream(ctx, p.Topology.DLQStream())
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew
		if _, err := p.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := p.JS.Publish(ctx, p.Topology.DLQSubject("other"), []byte("filler")); err != nil {
			t.Fatal(err)
		}
		// Every attempt reaches the DLQ subject: a plain subscriber sees each.
		tries, err := nc.SubscribeSync(p.Topology.DLQSubject("acme"))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}

		d := deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Attempts: 3, Backoff: time.Millisecond}
		err = d.Write(ctx, letter(p))
		if !errors.Is(err, deadletter.ErrDeadLetterUnwritable) {
			t.Fatalf("write to a full DLQ: %v; want ErrDeadLetterUnwritable", err)
		}
		if !strings.Contains(err.Error(), "maximum messages") || !strings.Contains(err.Error(), p.Topology.DLQSubject("acme")) {
			t.Errorf("error %q; want the subject and the server's reason", err)
		}
		// The stream answered each attempt after it was delivered to the
		// subscriber on the same connection, so all are counted by now.
		if n, _, _ := tries.Pending(); n != 3 {
			t.Errorf("the copy was tried %d times; want exactly Attempts = 3", n)
		}
	})

	t.Run("a write its caller stops is not reported unwritable", func(t *testing.T) {
		t.Parallel()
		p := natstest.Provision(t, natstest.Connect(t))
		if err := p.JS.DeleteStream(ctxT(t), p.Topology.DLQStream()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		d := deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Attempts: 3, Backoff: time.Millisecond}
		err := d.Write(ctx, letter(p))
		if !errors.Is(err, context.Canceled) || errors.Is(err, deadletter.ErrDeadLetterUnwritable) {
			t.Fatalf("write with a cancelled context: %v; want context.Canceled, not ErrDeadLetterUnwritable (a shutdown must not give up on an event)", err)
		}
	})

	t.Run("no stream captures the DLQ subject", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		p := natstest.Provision(t, natstest.Connect(t))
		if err := p.JS.DeleteStream(ctx, p.Topology.DLQStream()); err != nil {
			t.Fatal(err)
		}
		d := deadletter.DeadLetterer{JS: p.JS, Topology: p.Topology, Attempts: 2, Backoff: time.Millisecond}
		if err := d.Write(ctx, letter(p)); !errors.Is(err, deadletter.ErrDeadLetterUnwritable) {
			t.Fatalf("write without a DLQ stream: %v; want ErrDeadLetterUnwritable", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the write ran until the test's deadline instead of giving up")
		}
	})
}
