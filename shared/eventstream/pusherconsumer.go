// Package eventstream is the events stream as the pusher and the
// operators' tools read it: publishing an opt-out event, the pusher's one
// durable consumer (made, kept up to date, and put in place of the
// per-tenant consumers of earlier versions) and each tenant's backlog.
package eventstream

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/natsx"
)

// legacyConsumerPrefix begins the names of the per-tenant consumers
// ("pusher_<tenant>") that versions before the shared consumer made.
const legacyConsumerPrefix = "pusher_"

// EnsurePusherConsumer returns the pusher's consumer, updating the settings
// the topology controls (ack wait, max ack pending) on one already there;
// its start is kept, as the server refuses to change it.
//
// Made where an earlier version left one consumer per tenant, it starts at
// the first event one of them had not settled, so nothing is skipped and
// little is folded twice (folding is idempotent); the old consumers stay
// until DeleteIdleLegacyConsumers removes them. Made on a stream without
// them it starts at the beginning, as the per-tenant consumers did.
func EnsurePusherConsumer(ctx context.Context, js jetstream.JetStream, t natsx.Topology) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return nil, fmt.Errorf("events stream %s: %w", t.EventsStream(), err)
	}
	want := t.PusherConsumerConfig()
	c, err := s.Consumer(ctx, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		start, err := legacyStart(ctx, js, s, t)
		if err != nil {
			return nil, fmt.Errorf("consumer %s: start after per-tenant consumers: %w", want.Durable, err)
		}
		if start > 0 {
			want.DeliverPolicy, want.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
		}
		c, err = s.CreateConsumer(ctx, want)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			// Another replica made it first, perhaps from a slightly
			// different start: theirs stands.
			c, err = s.Consumer(ctx, want.Durable)
		}
		if err != nil {
			return nil, fmt.Errorf("create consumer %s: %w", want.Durable, err)
		}
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", want.Durable, err)
	}
	cur := c.CachedInfo().Config
	next := cur
	next.Description, next.AckPolicy, next.AckWait = want.Description, want.AckPolicy, want.AckWait
	next.MaxDeliver, next.MaxAckPending = want.MaxDeliver, want.MaxAckPending
	if reflect.DeepEqual(cur, next) {
		return c, nil
	}
	if c, err = s.UpdateConsumer(ctx, next); err != nil {
		return nil, fmt.Errorf("update consumer %s: %w", want.Durable, err)
	}
	return c, nil
}

// legacyStart is the stream sequence the shared consumer starts at in
// place of per-tenant consumers: the lowest first unsettled event of any
// tenant (a consumer's ack floor + 1; the first stored event of a tenant
// that has events and no consumer), or the next event when all are
// settled. 0 means there are no per-tenant consumers: start at the
// beginning.
func legacyStart(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, t natsx.Topology) (uint64, error) {
	// The last sequence before the consumers are read: an event stored
	// after it is delivered whatever they said.
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	start := info.State.LastSeq + 1
	legacy, err := legacyConsumers(ctx, s, t)
	if err != nil || len(legacy) == 0 {
		return 0, err
	}
	covered := map[string]bool{}
	for _, ci := range legacy {
		covered[ci.Config.FilterSubject] = true
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			continue // everything it was delivered is settled
		}
		start = min(start, ci.AckFloor.Stream+1)
	}
	tenants, err := natsx.EventTenants(ctx, js, t)
	if err != nil {
		return 0, err
	}
	for _, tn := range tenants {
		subject := t.EventsSubject(tn)
		if covered[subject] {
			continue
		}
		// Never pulled by any pusher: from its first event.
		m, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("first event of %s: %w", tn, err)
		}
		start = min(start, m.Sequence)
	}
	return start, nil
}

// legacyConsumers lists the per-tenant consumers an earlier pusher made:
// named pusher_<...>, each filtered on one tenant's events subject.
func legacyConsumers(ctx context.Context, s jetstream.Stream, t natsx.Topology) ([]*jetstream.ConsumerInfo, error) {
	var out []*jetstream.ConsumerInfo
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if !strings.HasPrefix(ci.Name, legacyConsumerPrefix) || ci.Name == t.PusherConsumer() {
			continue
		}
		if _, ok := t.TenantFromEventsSubject(ci.Config.FilterSubject); ok {
			out = append(out, ci)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	return out, nil
}

// DeleteIdleLegacyConsumers deletes the per-tenant consumers an earlier
// version made, once the shared consumer exists (it delivers everything
// they had not settled). A consumer a pusher still pulls from (a replica
// of the earlier version, during a rolling upgrade) is kept: deleted under
// it, that replica would make it again from the stream's first event. It
// returns the names deleted and how many were kept.
func DeleteIdleLegacyConsumers(ctx context.Context, js jetstream.JetStream, t natsx.Topology) (deleted []string, kept int, err error) {
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return nil, 0, fmt.Errorf("events stream %s: %w", t.EventsStream(), err)
	}
	if _, err := s.Consumer(ctx, t.PusherConsumer()); err != nil {
		return nil, 0, fmt.Errorf("consumer %s, which replaces the per-tenant ones: %w", t.PusherConsumer(), err)
	}
	legacy, err := legacyConsumers(ctx, s, t)
	if err != nil {
		return nil, 0, err
	}
	var errs []error
	for _, ci := range legacy {
		if ci.NumWaiting > 0 {
			kept++
			continue
		}
		if err := s.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("delete consumer %s: %w", ci.Name, err))
			continue
		}
		deleted = append(deleted, ci.Name)
	}
	return deleted, kept, errors.Join(errs...)
}
