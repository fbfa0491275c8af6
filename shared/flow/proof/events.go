package proof

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// EventInfo is an applied event as its publisher sent it.
type EventInfo struct {
	Seq        uint64    `json:"seq"`
	Received   time.Time `json:"received"`
	Action     string    `json:"action"`
	Source     string    `json:"source"`
	OccurredAt time.Time `json:"occurredAt"`
	Reason     string    `json:"reason,omitempty"`
	TraceID    string    `json:"traceId,omitempty"`
}

// lookupEvents finds the events with the given ids among the tenant's stored
// events. The ledger records which event changed a person and its source,
// but not the event's action and free-text reason; those are read from the
// events stream while it still holds the event (OPTOUT_EVENTS_MAX_AGE,
// 14 days by default).
func lookupEvents(ctx context.Context, js jetstream.JetStream, topo natsx.Topology, tenant string, ids map[string]bool) (map[string]EventInfo, error) {
	out := map[string]EventInfo{}
	if len(ids) == 0 {
		return out, nil
	}
	errDone := errDoneType{}
	err := natsx.ReadSubject(ctx, js, topo.EventsStream(), topo.EventsSubject(tenant), func(m jetstream.Msg) error {
		ev, ok := deadletter.Peek(m.Data(), m.Headers())
		if !ok || !ids[ev.GetEventId()] {
			return nil
		}
		if _, dup := out[ev.GetEventId()]; dup {
			return nil // a replayed copy: the first is what was applied first
		}
		info := EventInfo{Action: ev.GetAction().String(), Source: ev.GetSource().String(), Reason: ev.GetReason(), TraceID: natsx.TraceID(m.Headers())}
		if ts := ev.GetOccurredAt(); ts.IsValid() {
			info.OccurredAt = ts.AsTime().UTC()
		}
		if md, err := m.Metadata(); err == nil {
			info.Seq, info.Received = md.Sequence.Stream, md.Timestamp.UTC()
		}
		out[ev.GetEventId()] = info
		if len(out) == len(ids) {
			return errDone
		}
		return nil
	})
	if err != nil && err != error(errDone) {
		return nil, err
	}
	return out, nil
}

type errDoneType struct{}

func (errDoneType) Error() string { return "all events found" }
