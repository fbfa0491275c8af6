package eventstream

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/event"
	"github.com/optout-sync/optout-sync/shared/natsx"
)

// PublishEvent sends an opt-out event through p to its tenant's events
// subject, as protobuf or (asJSON) protojson.
func PublishEvent(ctx context.Context, p natsx.Publisher, ev *optoutv1.OptOutEvent, asJSON bool) (*jetstream.PubAck, error) {
	data, contentType, err := event.Encode(ev, asJSON)
	if err != nil {
		return nil, fmt.Errorf("publish event %s: %w", ev.GetEventId(), err)
	}
	msg := nats.NewMsg(p.Topology.EventsSubject(ev.GetTenantId()))
	msg.Data = data
	msg.Header.Set(event.HeaderContentType, contentType)
	return p.Publish(ctx, msg, ev.GetEventId())
}
