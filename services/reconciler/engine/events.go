package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// Headers on events the reconciler publishes, so a consumer can trace an
// applied change to its run.
const (
	HeaderRun   = "Optout-Reconcile-Run"
	HeaderFence = "Optout-Reconcile-Fence"
)

// eventID is deterministic per person, action and Salesforce change, so a
// resumed run re-publishing it is dropped by JetStream's duplicate window
// (and recognised by consumers beyond it).
func eventID(tenant string, id idset.ID, action optoutv1.Action, atMillis int64) string {
	a := "unsub"
	if action == optoutv1.Action_RESUBSCRIBE {
		a = "resub"
	}
	return "reconcile-" + tenant + "-" + id.String() + "-" + a + "-" + strconv.FormatInt(atMillis, 10)
}

func objectType(id idset.ID) optoutv1.ObjectType {
	switch id.Type() {
	case sfid.Contact:
		return optoutv1.ObjectType_CONTACT
	case sfid.Lead:
		return optoutv1.ObjectType_LEAD
	}
	return optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
}

// publishApplied announces a Salesforce-side change on
// optout.v1.applied.<tenant> as an OptOutEvent with source SALESFORCE, in
// the caller's trace (the Publisher's PRODUCER span carries traceparent).
// It reports whether the stream stored it (false: a duplicate). The stream
// cannot fence the event: the run's writer checks its fence first.
func (r *run) publishApplied(ctx context.Context, evID string, id idset.ID, salesConnectID string, action optoutv1.Action, atMillis int64, reason string) (bool, error) {
	if err := r.ledger.Check(ctx); err != nil {
		return false, err
	}
	ev := &optoutv1.OptOutEvent{
		EventId:  evID,
		TenantId: r.job.Tenant,
		Person: &optoutv1.Person{
			SalesConnectId: salesConnectID,
			SalesforceId:   id.String(),
			ObjectType:     objectType(id),
		},
		Action:     action,
		OccurredAt: timestamppb.New(time.UnixMilli(atMillis)),
		Source:     optoutv1.Source_SALESFORCE,
		Reason:     reason,
	}
	data, ctype, err := event.Encode(ev, false)
	if err != nil {
		return false, fmt.Errorf("encode applied event: %w", err)
	}
	msg := nats.NewMsg(r.e.Topology.AppliedSubject(r.job.Tenant))
	msg.Data = data
	msg.Header.Set(event.HeaderContentType, ctype)
	msg.Header.Set(HeaderRun, r.job.RunID)
	msg.Header.Set(HeaderFence, strconv.FormatUint(r.fence, 10))
	ack, err := r.e.Publisher.Publish(ctx, msg, evID)
	if err != nil {
		return false, err
	}
	return !ack.Duplicate, nil
}

// publishReport sends a finished run's report on optout.v1.runs.<tenant>.
func (e *Engine) publishReport(ctx context.Context, rep runs.Report) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(e.Topology.RunsSubject(rep.Tenant))
	msg.Data = data
	msg.Header.Set(event.HeaderContentType, event.ContentTypeJSON)
	_, err = e.Publisher.Publish(ctx, msg, rep.RunID)
	return err
}
