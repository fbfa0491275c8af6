package natsx

import (
	"context"
	"crypto/sha256"
	"fmt"
	"regexp"

	"github.com/nats-io/nats.go/jetstream"
)

// The per-tenant consumers, kept only until the pusher, the ingest and
// the cluster test move to the shared consumer (next commits).

// TenantConsumer names the pusher's durable consumer of one tenant's events.
func (t Topology) TenantConsumer(tenant string) string {
	if consumerNameRe.MatchString(tenant) {
		return "pusher_" + tenant
	}
	return fmt.Sprintf("pusher_x%x", sha256.Sum256([]byte(tenant)))[:40]
}

var consumerNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// TenantConsumerConfig is the durable pull consumer of one tenant's events.
func (t Topology) TenantConsumerConfig(tenant string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       t.TenantConsumer(tenant),
		Description:   "pushes this tenant's opt-outs to Salesforce",
		FilterSubject: t.EventsSubject(tenant),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.PusherAckWait,
		MaxDeliver:    -1,
		MaxAckPending: t.PusherMaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// EnsureTenantConsumer creates or updates a tenant's consumer.
func EnsureTenantConsumer(ctx context.Context, js jetstream.JetStream, t Topology, tenant string) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, t.EventsStream(), t.TenantConsumerConfig(tenant))
	if err != nil {
		return nil, fmt.Errorf("consumer for tenant %s: %w", tenant, err)
	}
	return c, nil
}
