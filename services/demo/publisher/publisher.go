// Package publisher plays Sales Connect: it publishes a steady stream of
// opt-outs, mostly valid, some without a Salesforce id and a few malformed,
// so every path of the pusher shows up in the demo.
package publisher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// Publisher sends events for records seeded in the sandbox.
type Publisher struct {
	Pub     natsx.Publisher
	Tenants []string
	Records map[string][]sandbox.Record // by tenant
	// NoIDShare and InvalidShare are the shares of events sent without a
	// Salesforce id and with a malformed one.
	NoIDShare, InvalidShare float64

	Published atomic.Int64
	// AlreadyOptedOut counts the published opt-outs of a person already
	// opted out (by an earlier event, of this run or, see OptedOut, of an
	// earlier one): the ledger folds them without a Salesforce write, so
	// no pusher count shows them.
	AlreadyOptedOut atomic.Int64
	seq             atomic.Int64

	mu       sync.Mutex
	optedOut map[string]bool // tenant + "/" + Salesforce id
}

// OptedOut records that a person was opted out before this publisher
// started (a demo run before this one on the same NATS), so its next event
// counts as already opted out.
func (p *Publisher) OptedOut(tenant, salesforceID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.optedOut == nil {
		p.optedOut = map[string]bool{}
	}
	p.optedOut[tenant+"/"+salesforceID] = true
}

// repeat reports whether the person was already opted out, and marks it
// opted out now.
func (p *Publisher) repeat(tenant, salesforceID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.optedOut == nil {
		p.optedOut = map[string]bool{}
	}
	k := tenant + "/" + salesforceID
	was := p.optedOut[k]
	p.optedOut[k] = true
	return was
}

// Run publishes rate events a second until ctx ends.
func (p *Publisher) Run(ctx context.Context, rate int) error {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := p.PublishOne(ctx); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// PublishOne sends one event for a random person of a random tenant.
func (p *Publisher) PublishOne(ctx context.Context) error {
	t := p.Tenants[rand.IntN(len(p.Tenants))]
	recs := p.Records[t]
	return p.publish(ctx, t, recs[rand.IntN(len(recs))], true)
}

// PublishRecord sends a valid opt-out for one seeded record (of the tenant
// whose org holds it: the org name is the tenant id).
func (p *Publisher) PublishRecord(ctx context.Context, tenant string, r sandbox.Record) error {
	return p.publish(ctx, tenant, r, false)
}

func (p *Publisher) publish(ctx context.Context, t string, r sandbox.Record, mixed bool) error {
	n := p.seq.Add(1)
	ev := &optoutv1.OptOutEvent{
		EventId:  fmt.Sprintf("demo-%d-%d", time.Now().UnixNano(), n),
		TenantId: t,
		Person: &optoutv1.Person{
			SalesConnectId: "sc-" + r.ID,
			SalesforceId:   r.ID,
			ObjectType:     map[string]optoutv1.ObjectType{"Contact": optoutv1.ObjectType_CONTACT, "Lead": optoutv1.ObjectType_LEAD}[r.Type],
		},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.Now(),
		Source:     optoutv1.Source_EMAIL_LINK,
		Reason:     "clicked unsubscribe",
	}
	x := rand.Float64()
	if !mixed {
		x = 1
	}
	valid := false
	switch {
	case x < p.NoIDShare:
		ev.Person.SalesforceId, ev.Person.ObjectType = "", optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
		ev.Person.SalesConnectId = fmt.Sprintf("sc-new-%d", n)
	case x < p.NoIDShare+p.InvalidShare:
		ev.Person.SalesforceId = r.ID[:15] + "ZZZ" // wrong checksum: rejected to the DLQ
	default:
		valid = true
	}
	if _, err := eventstream.PublishEvent(ctx, p.Pub, ev, true); err != nil {
		return err
	}
	// Counted once stored: a failed publish opted no one out.
	if valid && p.repeat(t, r.ID) {
		p.AlreadyOptedOut.Add(1)
	}
	p.Published.Add(1)
	return nil
}
