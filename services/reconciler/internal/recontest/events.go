package recontest

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// PublishEvent sends a real event on the tenant's events subject, as an
// upstream publisher would.
func (h *Harness) PublishEvent(tn, id, sc, sfID string, action optoutv1.Action, at time.Time) {
	h.T.Helper()
	ev := &optoutv1.OptOutEvent{
		EventId: id, TenantId: tn,
		Person:     &optoutv1.Person{SalesConnectId: sc, SalesforceId: sfID, ObjectType: optoutv1.ObjectType_CONTACT},
		Action:     action,
		OccurredAt: timestamppb.New(at),
		Source:     optoutv1.Source_EMAIL_LINK,
	}
	if _, err := eventstream.PublishEvent(h.Ctx, natsx.Publisher{JS: h.Prov.JS, Topology: h.Topo}, ev, false); err != nil {
		h.T.Fatal(err)
	}
}

// WaitingOptOuts seeds n Contacts not opted out in Salesforce and publishes
// an opt-out for each while nothing consumes the events stream (no pusher,
// no consumer yet). It returns the Salesforce ids by Sales Connect id
// and the storage time of the first event.
func (h *Harness) WaitingOptOuts(tn string, n int) (map[string]string, time.Time) {
	h.T.Helper()
	ids := map[string]string{}
	at := time.Now().Add(-time.Minute)
	for i := range n {
		sc := fmt.Sprintf("sc-%03d", i)
		ids[sc] = h.Org(tn).Put(sandbox.Record{Type: "Contact", Email: sc + "@example.com", SystemModstamp: at.Add(-time.Hour)}).ID
		h.PublishEvent(tn, "evt-"+tn+"-"+sc, sc, ids[sc], optoutv1.Action_UNSUBSCRIBE, at)
	}
	st, err := h.Prov.JS.Stream(h.Ctx, h.Topo.EventsStream())
	if err != nil {
		h.T.Fatal(err)
	}
	first, err := st.GetMsg(h.Ctx, 1, jetstream.WithGetMsgSubject(h.Topo.EventsSubject(tn)))
	if err != nil {
		h.T.Fatal(err)
	}
	return ids, first.Time
}
