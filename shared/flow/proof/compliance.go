package proof

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Honour is one opt-out of a tenant and how Salesforce came to hold it: the
// row of the compliance export a reviewer asks for.
type Honour struct {
	Tenant         string `json:"tenant"`
	EventID        string `json:"eventId"`
	Key            string `json:"key"`
	SalesConnectID string `json:"salesConnectId,omitempty"`
	SalesforceID   string `json:"salesforceId,omitempty"`
	Source         string `json:"source,omitempty"`
	// RequestedAt is when the person asked (the event's occurredAt; the
	// receipt when that is unknown or later), ReceivedAt when the ledger
	// recorded it, HonouredAt when Salesforce confirmed the opt-out field
	// true (zero while it has not).
	RequestedAt time.Time `json:"requestedAt"`
	ReceivedAt  time.Time `json:"receivedAt"`
	HonouredAt  time.Time `json:"honouredAt,omitzero"`
	Field       string    `json:"field,omitempty"`
	// Status is honoured, pending, failed (a permanent error or retries
	// past the horizon; the event is in the dead-letter queue) or
	// superseded (the person resubscribed before it was honoured).
	Status string `json:"status"`
	// How says who made Salesforce hold it: HowPushed, HowNightly,
	// HowAlready or HowInSalesforce.
	How string `json:"how,omitempty"`
	// Seconds is HonouredAt − RequestedAt: the time to honour it.
	Seconds float64 `json:"secondsToHonour,omitempty"`
}

// Honour statuses and ways.
const (
	StatusHonoured   = "honoured"
	StatusPending    = "pending"
	StatusFailed     = "failed"
	StatusSuperseded = "superseded"

	HowPushed       = "pushed by optout-sync"
	HowNightly      = "written by the nightly reconcile"
	HowAlready      = "already opted out in Salesforce"
	HowInSalesforce = "opted out in Salesforce itself"
)

// HonourHeader is the CSV header of Honour.
var HonourHeader = []string{"tenant", "event_id", "key", "sales_connect_id", "salesforce_id", "source", "requested_at", "received_at",
	"honoured_at", "field", "status", "how", "seconds_to_honour"}

// CSV is the row's values in HonourHeader's order.
func (h Honour) CSV() []string {
	secs := ""
	if !h.HonouredAt.IsZero() {
		secs = strconv.FormatFloat(h.Seconds, 'f', 3, 64)
	}
	return []string{h.Tenant, h.EventID, h.Key, h.SalesConnectID, h.SalesforceID, h.Source, rfc(h.RequestedAt), rfc(h.ReceivedAt),
		rfc(h.HonouredAt), h.Field, h.Status, h.How, secs}
}

// sourceSalesforce is the Source of what was learnt from Salesforce.
const sourceSalesforce = "SALESFORCE"

// Compliance streams each opt-out of tenant received in [from, to) (a zero
// bound is open) with how and when Salesforce came to hold it: settled ones
// (honoured, superseded) as the trail settles them, then those still
// pending or failed, by receipt. It reads the tenant's trail from the
// range's start on (an opt-out received in range is honoured after it).
func Compliance(ctx context.Context, src Source, tenant string, from, to time.Time, fn func(Honour) error) error {
	if err := waitAudited(ctx, src.JS, src.Topology); err != nil {
		return err
	}
	inRange := func(h *Honour) bool {
		return (from.IsZero() || !h.ReceivedAt.Before(from)) && (to.IsZero() || h.ReceivedAt.Before(to))
	}
	emit := func(h *Honour) error {
		if !inRange(h) {
			return nil
		}
		return fn(*h)
	}
	seen := map[string]bool{}
	pending := map[string][]*Honour{} // by ledger key
	failed := map[string]bool{}       // by ledger key: its latest state
	settle := func(key, status, how string, at time.Time, field string) error {
		for _, h := range pending[key] {
			h.Status, h.How = status, how
			if status == StatusHonoured {
				h.HonouredAt, h.Field = at, field
				h.Seconds = at.Sub(h.RequestedAt).Seconds()
			}
			if err := emit(h); err != nil {
				return err
			}
		}
		delete(pending, key)
		return nil
	}
	// A record is stored when the server copies the change, at or after
	// it; a minute's margin covers the clocks of a cluster's servers.
	since := time.Time{}
	if !from.IsZero() {
		since = from.Add(-time.Minute)
	}
	err := ledger.ReadAudit(ctx, src.JS, src.Topology, tenant, func(r ledger.AuditRecord) error {
		e := r.Entry
		confirmedTrue := e.State == optout.StateSynced && e.Confirmed != nil && *e.Confirmed
		failed[r.Key] = e.State == optout.StateFailed
		if e.MergedInto != "" {
			// The person lives on under the other key: so do its opt-outs.
			pending[e.MergedInto] = append(pending[e.MergedInto], pending[r.Key]...)
			delete(pending, r.Key)
			return nil
		}
		if e.OptedOut && e.DecidedBy != "" && !seen[e.DecidedBy] {
			seen[e.DecidedBy] = true
			h := &Honour{Tenant: tenant, EventID: e.DecidedBy, Key: r.Key, SalesConnectID: e.SalesConnectID, SalesforceID: e.SalesforceID,
				Source: e.Source, ReceivedAt: r.At, RequestedAt: r.At, Status: StatusPending}
			if ev := e.LastEvent; ev != nil && ev.ID == e.DecidedBy && !ev.OccurredAt.IsZero() && ev.OccurredAt.Before(r.At) {
				h.RequestedAt = ev.OccurredAt
			}
			switch {
			case e.Source == sourceSalesforce:
				// Learnt from Salesforce: it held the opt-out from the start.
				h.Status, h.How, h.HonouredAt, h.Field = StatusHonoured, HowInSalesforce, h.RequestedAt, e.Field
				return emit(h)
			case confirmedTrue:
				at := e.ConfirmedAt
				if at.IsZero() || at.After(r.At) {
					at = r.At
				}
				// Older opt-outs of the person still waiting are held now too.
				if err := settle(r.Key, StatusHonoured, HowAlready, at, e.Field); err != nil {
					return err
				}
				h.Status, h.How, h.HonouredAt, h.Field = StatusHonoured, HowAlready, r.At, e.Field
				h.Seconds = r.At.Sub(h.RequestedAt).Seconds()
				return emit(h)
			}
			pending[r.Key] = append(pending[r.Key], h)
			return nil
		}
		if len(pending[r.Key]) == 0 {
			return nil
		}
		switch {
		case !e.OptedOut:
			return settle(r.Key, StatusSuperseded, "", time.Time{}, "")
		case confirmedTrue:
			how := HowPushed
			if r.Fence != 0 {
				how = HowNightly
			}
			at := e.ConfirmedAt
			if at.IsZero() {
				at = r.At
			}
			return settle(r.Key, StatusHonoured, how, at, e.Field)
		}
		return nil
	}, natsx.StoredSince(since))
	if err != nil {
		return err
	}
	var left []*Honour
	for key, hs := range pending {
		for _, h := range hs {
			if failed[key] {
				h.Status = StatusFailed
			}
			left = append(left, h)
		}
	}
	sort.Slice(left, func(i, j int) bool {
		if !left[i].ReceivedAt.Equal(left[j].ReceivedAt) {
			return left[i].ReceivedAt.Before(left[j].ReceivedAt)
		}
		return left[i].EventID < left[j].EventID
	})
	for _, h := range left {
		if err := emit(h); err != nil {
			return err
		}
	}
	return nil
}
