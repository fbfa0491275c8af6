package eventstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/natsx"
)

// Backlog is what the pusher has not settled yet of one tenant's events.
// The pusher's one consumer serves every tenant, so the server keeps no
// count per tenant: they are counted in the stream, from the consumer's
// ack floor (every event before it is acknowledged) and the last event it
// delivered.
type Backlog struct {
	Consumer string `json:"consumer"`
	// ConsumerExists is false until a pusher first ran; then every stored
	// event of the tenant counts as waiting.
	ConsumerExists bool `json:"consumerExists"`
	// Stored is every event of the tenant the stream keeps, settled or not.
	Stored uint64 `json:"stored"`
	// Waiting: not delivered to a pusher yet (exact). InFlight: delivered
	// and past the ack floor, at most the consumer's unacknowledged events
	// of all tenants. Folding takes milliseconds, and an event left dirty
	// is held for its push for 2 s at most, so the floor follows the
	// deliveries closely; but while an older event (of any tenant) stays
	// unacknowledged (a crashed replica's, until AckWait ends), the
	// tenant's events acknowledged after it may still count here.
	Waiting  uint64 `json:"waiting"`
	InFlight int    `json:"inFlight"`
	// Oldest is the tenant's first event past the ack floor; nil when
	// nothing waits.
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

// TenantBacklog reads a tenant's backlog. It costs a few lookups however
// long the backlog is, and a short-lived consumer per count when the
// tenant has events past the ack floor.
func TenantBacklog(ctx context.Context, js jetstream.JetStream, t natsx.Topology, tenant string) (Backlog, error) {
	b := Backlog{Consumer: t.PusherConsumer()}
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return b, fmt.Errorf("events stream %s: %w", t.EventsStream(), err)
	}
	subject := t.EventsSubject(tenant)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return b, fmt.Errorf("events of %s: %w", tenant, err)
	}
	b.Stored = info.State.Subjects[subject]
	floor, delivered, unacked, exists, err := pusherProgress(ctx, s, t)
	if err != nil {
		return b, err
	}
	b.ConsumerExists = exists
	if b.Stored == 0 {
		return b, nil
	}
	oldest, err := firstFrom(ctx, s, subject, floor+1)
	if oldest == nil || err != nil {
		return b, err
	}
	b.Oldest = oldest
	past := b.Stored // nothing is acknowledged before the first event
	if floor > 0 {
		if past, err = countFrom(ctx, s, subject, oldest.Seq); err != nil {
			return b, err
		}
	}
	if oldest.Seq > delivered {
		b.Waiting = past
		return b, nil
	}
	next, err := firstFrom(ctx, s, subject, delivered+1)
	if err != nil {
		return b, err
	}
	if next != nil {
		if b.Waiting, err = countFrom(ctx, s, subject, next.Seq); err != nil {
			return b, err
		}
	}
	// The counts are read one after the other while the pusher works.
	b.Waiting = min(b.Waiting, past)
	b.InFlight = int(min(past-b.Waiting, uint64(max(unacked, 0))))
	return b, nil
}

// FirstUnsettled is the first event of tenant past the pusher consumer's
// ack floor (every event before it is folded); nil when there is none.
// Before a pusher ran, it is the tenant's first stored event. s is the
// events stream.
func FirstUnsettled(ctx context.Context, s jetstream.Stream, t natsx.Topology, tenant string) (*StoredMsg, error) {
	floor, _, _, _, err := pusherProgress(ctx, s, t)
	if err != nil {
		return nil, err
	}
	return firstFrom(ctx, s, t.EventsSubject(tenant), floor+1)
}

// pusherProgress reads the pusher consumer's ack floor and last delivered
// event (stream sequences; both 0 before a pusher ran) and its
// unacknowledged events.
func pusherProgress(ctx context.Context, s jetstream.Stream, t natsx.Topology) (floor, delivered uint64, unacked int, exists bool, err error) {
	c, err := s.Consumer(ctx, t.PusherConsumer())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, 0, false, fmt.Errorf("consumer %s: %w", t.PusherConsumer(), err)
	}
	info := c.CachedInfo()
	return info.AckFloor.Stream, info.Delivered.Stream, info.NumAckPending, true, nil
}

// firstFrom is subject's first stored event at or after seq; nil if none.
func firstFrom(ctx context.Context, s jetstream.Stream, subject string, seq uint64) (*StoredMsg, error) {
	m, err := s.GetMsg(ctx, max(seq, 1), jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s from sequence %d: %w", subject, seq, err)
	}
	return &StoredMsg{Seq: m.Sequence, Received: m.Time.UTC(), Subject: m.Subject, Header: m.Header, Data: m.Data}, nil
}

// countFrom counts subject's events at or after seq. The server counts
// what a consumer starting there has pending, so it takes a consumer:
// in memory, one replica, never delivering (nothing pulls from it),
// deleted at once and by the server after a minute if that fails.
func countFrom(ctx context.Context, s jetstream.Stream, subject string, seq uint64) (uint64, error) {
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:       "counts a tenant's backlog (optout-sync)",
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, fmt.Errorf("count %s from sequence %d: %w", subject, seq, err)
	}
	// A consumer left behind is the server's to remove: the count stands.
	_ = s.DeleteConsumer(ctx, c.CachedInfo().Name)
	return c.CachedInfo().NumPending, nil
}
