package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backlog is what a tenant's pusher consumer has not settled yet.
type Backlog struct {
	Consumer string `json:"consumer"`
	// ConsumerExists is false until a pusher first pulls for the tenant;
	// then every stored event of the tenant counts as waiting.
	ConsumerExists bool `json:"consumerExists"`
	// Waiting: not delivered yet. InFlight: delivered and not acknowledged,
	// including events held back by a retry delay or a paused tenant.
	Waiting     uint64 `json:"waiting"`
	InFlight    int    `json:"inFlight"`
	Redelivered int    `json:"redelivered"`
	// Oldest is the first unacknowledged event; nil when nothing waits.
	Oldest *StoredMsg `json:"oldest,omitempty"`
}

// Total is every event still to be settled.
func (b Backlog) Total() uint64 { return b.Waiting + uint64(max(b.InFlight, 0)) }

// StoredMsg is one stored message.
type StoredMsg struct {
	Seq      uint64      `json:"seq"`
	Received time.Time   `json:"received"`
	Subject  string      `json:"subject"`
	Header   nats.Header `json:"-"`
	Data     []byte      `json:"-"`
}

// TenantBacklog reads a tenant's backlog from its pusher consumer. The oldest
// unacknowledged event is the first event after the consumer's ack floor
// (every earlier one is acknowledged), so it costs one lookup however long
// the backlog is.
func TenantBacklog(ctx context.Context, js jetstream.JetStream, t Topology, tenant string) (Backlog, error) {
	b := Backlog{Consumer: t.TenantConsumer(tenant)}
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return b, fmt.Errorf("events stream %s: %w", t.EventsStream(), err)
	}
	subject := t.EventsSubject(tenant)
	from := uint64(1)
	c, err := s.Consumer(ctx, b.Consumer)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return b, fmt.Errorf("events of %s: %w", tenant, err)
		}
		b.Waiting = info.State.Subjects[subject]
	case err != nil:
		return b, fmt.Errorf("consumer %s: %w", b.Consumer, err)
	default:
		info, err := c.Info(ctx)
		if err != nil {
			return b, fmt.Errorf("consumer %s: %w", b.Consumer, err)
		}
		b.ConsumerExists = true
		b.Waiting, b.InFlight, b.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
		from = info.AckFloor.Stream + 1
	}
	if b.Total() == 0 {
		return b, nil
	}
	m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return b, nil // acknowledged or expired meanwhile
	}
	if err != nil {
		return b, fmt.Errorf("oldest event of %s: %w", tenant, err)
	}
	b.Oldest = &StoredMsg{Seq: m.Sequence, Received: m.Time.UTC(), Subject: m.Subject, Header: m.Header, Data: m.Data}
	return b, nil
}
