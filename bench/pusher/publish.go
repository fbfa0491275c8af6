package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// PublishSpec is the job of the publisher process (Sales Connect's part):
// one opt-out per item, in order, asynchronously (PublishMsgAsync), either
// all at once or at Rate events per second.
type PublishSpec struct {
	NATSURL   string    `json:"natsUrl"`
	Namespace string    `json:"namespace"`
	Items     []PubItem `json:"items"`
	// Rate is events per second over all items; 0 publishes at once.
	Rate float64 `json:"rate"`
}

// PubItem is one opt-out: a seeded record of the tenant's org.
type PubItem struct {
	Tenant string `json:"t"`
	ID     string `json:"id"`
	Type   string `json:"type"`
}

// salesConnectID is the Sales Connect id the item's event carries.
func (it PubItem) salesConnectID() string { return "sc-" + it.ID }

// PublishResult is what the publisher process reports on stdout.
type PublishResult struct {
	Published int           `json:"published"`
	Start     time.Time     `json:"start"`
	Sent      time.Duration `json:"sent"`  // last PublishMsgAsync returned
	Acked     time.Duration `json:"acked"` // last ack from JetStream
	Errors    int           `json:"errors"`
	FirstErr  string        `json:"firstErr,omitempty"`
}

// maxPending bounds the publishes awaiting JetStream's ack, as a real
// publisher would bound its memory.
const maxPending = 4000

// Publish runs the publisher process: it reads a PublishSpec from specPath
// and writes a PublishResult to out. The occurredAt of every event is the
// moment it is handed to the connection, so a ledger entry's decidedAt is its
// publish time.
func Publish(ctx context.Context, specPath string, out io.Writer) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var spec PublishSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("publish spec: %w", err)
	}
	nc, err := nats.Connect(spec.NATSURL, nats.Name("optout-bench-publisher"))
	if err != nil {
		return err
	}
	defer nc.Close()
	var errs atomic.Int64
	var firstErr atomic.Value
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			if errs.Add(1) == 1 {
				firstErr.Store(err.Error())
			}
		}))
	if err != nil {
		return err
	}
	topo := natsx.DefaultTopology()
	topo.Namespace = spec.Namespace
	res := PublishResult{Start: time.Now()}
	for i, it := range spec.Items {
		if spec.Rate > 0 {
			at := res.Start.Add(time.Duration(float64(i) / spec.Rate * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
		}
		msg, id, err := eventMsg(topo, it, i)
		if err != nil {
			return err
		}
		// A long stall wait: a busy server slows the publisher down (the
		// bound on unacknowledged publishes), it does not fail it.
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithStallWait(time.Minute)); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		res.Published++
	}
	res.Sent = time.Since(res.Start)
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return errors.New("publish acks did not all arrive within a minute")
	case <-ctx.Done():
		return ctx.Err()
	}
	res.Acked = time.Since(res.Start)
	res.Errors = int(errs.Load())
	if v, ok := firstErr.Load().(string); ok {
		res.FirstErr = v
	}
	return json.NewEncoder(out).Encode(res)
}

var runID = time.Now().UnixNano()

// eventMsg is the production contract's message for one opt-out (protobuf,
// Nats-Msg-Id = event id).
func eventMsg(topo natsx.Topology, it PubItem, i int) (*nats.Msg, string, error) {
	ot := optoutv1.ObjectType_CONTACT
	if it.Type == "Lead" {
		ot = optoutv1.ObjectType_LEAD
	}
	ev := &optoutv1.OptOutEvent{
		EventId:    fmt.Sprintf("bench-%d-%d", runID, i),
		TenantId:   it.Tenant,
		Person:     &optoutv1.Person{SalesConnectId: it.salesConnectID(), SalesforceId: it.ID, ObjectType: ot},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.Now(),
		Source:     optoutv1.Source_EMAIL_LINK,
		Reason:     "clicked unsubscribe",
	}
	data, ctype, err := event.Encode(ev, false)
	if err != nil {
		return nil, "", err
	}
	msg := nats.NewMsg(topo.EventsSubject(it.Tenant))
	msg.Data = data
	msg.Header.Set(event.HeaderContentType, ctype)
	// A sampled W3C trace context, as an instrumented publisher sends: the
	// pusher then keeps it in the ledger entry and joins the trace.
	var tp [24]byte
	_, _ = rand.Read(tp[:])
	msg.Header.Set("traceparent", fmt.Sprintf("00-%x-%x-01", tp[:16], tp[16:]))
	return msg, ev.EventId, nil
}
