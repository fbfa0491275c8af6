// Package tenantstatus gathers what operators and Salesforce admins need to
// see about one tenant without reading logs: its settings, the pusher's view
// of its health, its backlog and dead letters, how long the oldest opt-out
// has waited, and a live check of its Salesforce prerequisites with what to
// do when one fails. optoutctl and the admin service's page both show it
// (one read model), so they can never disagree.
package tenantstatus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/compliance"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// ErrInvalidTenant means the id cannot be a tenant (see event.ValidTenant).
var ErrInvalidTenant = errors.New("not a valid tenant id: want 1-64 characters of A-Z a-z 0-9 _ -")

// Inspector reads a tenant's status. It only reads: it binds to what the
// services provisioned and writes nothing, to NATS or to Salesforce.
type Inspector struct {
	JS       jetstream.JetStream
	Topology natsx.Topology
	Settings tenant.Store
	Health   tenant.HealthStore
	// Ledger is needed only for Options.ScanLedger.
	Ledger *ledger.Ledger
	// Salesforce is needed only for Options.CheckSalesforce.
	Salesforce Clients
	// CheckTimeout bounds the live Salesforce check (default 15s), so a slow
	// org cannot hang a page or a command.
	CheckTimeout time.Duration
	Now          func() time.Time
}

// Options choose the costly parts of a status.
type Options struct {
	// CheckSalesforce runs the live prerequisite check: a token request and
	// two describe calls (they count against the org's API allowance).
	CheckSalesforce bool
	// ScanLedger reads every ledger entry of the tenant to count parked and
	// pending opt-outs: one pass over the tenant's people.
	ScanLedger bool
}

// Status is one tenant as operators see it.
type Status struct {
	Tenant string `json:"tenant"`
	// Known is false for a tenant nobody configured and no event, health
	// record or dead letter mentions (most likely a typo).
	Known bool `json:"known"`
	// Stored is false while the tenant runs on the defaults.
	Stored      bool            `json:"stored"`
	Revision    uint64          `json:"revision"`
	Settings    tenant.Settings `json:"settings"`
	TargetField string          `json:"targetField"`
	// Health is the pusher's last view; nil before it recorded one (it
	// records a change of mode, so nil also means "never had trouble").
	Health         *tenant.Health      `json:"health,omitempty"`
	Backlog        eventstream.Backlog `json:"backlog"`
	DeadLetters    uint64              `json:"deadLetters"`
	Ledger         *LedgerSummary      `json:"ledger,omitempty"`
	OldestUnpushed *Waiting            `json:"oldestUnpushed,omitempty"`
	// Compliance is the compliance clock (the oldest opt-out not yet
	// honoured in Salesforce against 48 hours and 10 business days), from
	// the ledger scan: nil without Options.ScanLedger.
	Compliance *compliance.Clock `json:"compliance,omitempty"`
	Salesforce *Check            `json:"salesforce,omitempty"`
}

// LedgerSummary counts a tenant's people by state.
type LedgerSummary struct {
	People   int                  `json:"people"`
	OptedOut int                  `json:"optedOut"`
	ByState  map[optout.State]int `json:"byState"`
	// Parked counts opt-outs without a Salesforce id; Pending those not yet
	// confirmed by Salesforce.
	Parked  int `json:"parked"`
	Pending int `json:"pending"`
	// OldestWaiting is the oldest opt-out decided but not confirmed in
	// Salesforce (parked or pending).
	OldestWaiting *Waiting `json:"oldestWaiting,omitempty"`
	// Unreadable lists entries that could not be decoded (never silently
	// left out of the counts).
	Unreadable []string `json:"unreadable,omitempty"`
	// clock is the compliance clock the same pass found (Status.Compliance).
	clock *compliance.Clock
}

// Where an unpushed change waits.
const (
	WaitingInBacklog = "backlog" // an event the pusher has not settled
	WaitingParked    = "parked"  // an opt-out without a Salesforce id
	WaitingPending   = "pending" // an opt-out Salesforce has not confirmed
)

// Waiting is the oldest change not yet in Salesforce.
type Waiting struct {
	// Since is when the person acted (occurred_at); for an event whose body
	// cannot be read, when the stream received it.
	Since      time.Time `json:"since"`
	AgeSeconds float64   `json:"ageSeconds"`
	Where      string    `json:"where"`
	EventID    string    `json:"eventId,omitempty"`
	// Seq is the events stream sequence (backlog) ; Key the ledger key (parked, pending).
	Seq uint64 `json:"seq,omitempty"`
	Key string `json:"key,omitempty"`
}

// Age is how long the change has waited at the time of the status.
func (w *Waiting) Age() time.Duration { return time.Duration(w.AgeSeconds * float64(time.Second)) }

func (in *Inspector) now() time.Time {
	if in.Now != nil {
		return in.Now().UTC()
	}
	return time.Now().UTC()
}

// Inspect returns the status of one tenant.
func (in *Inspector) Inspect(ctx context.Context, tenantID string, opt Options) (*Status, error) {
	if !event.ValidTenant(tenantID) {
		return nil, fmt.Errorf("tenant %q: %w", tenantID, ErrInvalidTenant)
	}
	s, rev, err := in.Settings.GetRevision(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	st := &Status{Tenant: tenantID, Stored: rev > 0, Revision: rev, Settings: s, TargetField: s.TargetField()}
	if st.Health, err = in.health(ctx, tenantID); err != nil {
		return nil, err
	}
	if st.Backlog, err = eventstream.TenantBacklog(ctx, in.JS, in.Topology, tenantID); err != nil {
		return nil, err
	}
	if st.DeadLetters, err = (deadletter.DLQ{JS: in.JS, Topology: in.Topology}).Count(ctx, tenantID); err != nil {
		return nil, err
	}
	st.OldestUnpushed = in.oldestInBacklog(st.Backlog)
	if opt.ScanLedger && in.Ledger != nil {
		if st.Ledger, err = in.scanLedger(ctx, tenantID); err != nil {
			return nil, err
		}
		if w := st.Ledger.OldestWaiting; w != nil && (st.OldestUnpushed == nil || w.Since.Before(st.OldestUnpushed.Since)) {
			st.OldestUnpushed = w
		}
		st.Compliance = st.Ledger.clock
	}
	st.Known = st.Stored || st.Health != nil || st.Backlog.Stored > 0 ||
		st.DeadLetters > 0 || (st.Ledger != nil && st.Ledger.People > 0)
	if opt.CheckSalesforce && in.Salesforce != nil {
		st.Salesforce = in.Check(ctx, tenantID, s)
	}
	return st, nil
}

func (in *Inspector) health(ctx context.Context, tenantID string) (*tenant.Health, error) {
	if in.Health.KV == nil {
		return nil, nil
	}
	h, err := in.Health.Get(ctx, tenantID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("health of %s: %w", tenantID, err)
	}
	return &h, nil
}

// oldestInBacklog reads when the person behind the first unacknowledged
// event acted. The body is read leniently: an event that fails validation
// still waits (until the pusher dead-letters it).
func (in *Inspector) oldestInBacklog(b eventstream.Backlog) *Waiting {
	if b.Oldest == nil {
		return nil
	}
	w := &Waiting{Since: b.Oldest.Received, Where: WaitingInBacklog, Seq: b.Oldest.Seq}
	if ev, ok := deadletter.Peek(b.Oldest.Data, b.Oldest.Header); ok {
		w.EventID = ev.GetEventId()
		if ts := ev.GetOccurredAt(); ts.IsValid() && ts.AsTime().Before(b.Oldest.Received) {
			w.Since = ts.AsTime().UTC()
		}
	}
	w.AgeSeconds = in.now().Sub(w.Since).Seconds()
	return w
}

func (in *Inspector) scanLedger(ctx context.Context, tenantID string) (*LedgerSummary, error) {
	sum := &LedgerSummary{ByState: map[optout.State]int{}}
	var (
		owed      int
		oldest    time.Time
		oldestKey string
	)
	err := in.Ledger.Scan(ctx, tenantID, func(it ledger.ScanItem) error {
		key, e := it.Key, it.Entry
		sum.People++
		sum.ByState[e.State]++
		if since, ok := compliance.Unhonoured(e); ok {
			if owed++; oldestKey == "" || since.Before(oldest) {
				oldest, oldestKey = since, key
			}
		}
		if !e.OptedOut {
			return nil
		}
		sum.OptedOut++
		where := ""
		switch e.State {
		case optout.StateParked:
			sum.Parked++
			where = WaitingParked
		case optout.StatePending:
			sum.Pending++
			where = WaitingPending
		default:
			return nil
		}
		if o := sum.OldestWaiting; o == nil || e.DecidedAt.Before(o.Since) {
			sum.OldestWaiting = &Waiting{Since: e.DecidedAt.UTC(), Where: where, EventID: e.DecidedBy, Key: key}
		}
		return nil
	}, func(key string, err error) { sum.Unreadable = append(sum.Unreadable, key) })
	if err != nil {
		return nil, err
	}
	if w := sum.OldestWaiting; w != nil {
		w.AgeSeconds = in.now().Sub(w.Since).Seconds()
	}
	c := compliance.NewClock(in.now(), owed, oldest, oldestKey)
	sum.clock = &c
	return sum, nil
}

// Summary is one line of the tenant list.
type Summary struct {
	Tenant      string          `json:"tenant"`
	Stored      bool            `json:"stored"`
	Settings    tenant.Settings `json:"settings"`
	TargetField string          `json:"targetField"`
	Health      *tenant.Health  `json:"health,omitempty"`
	Backlog     uint64          `json:"backlog"`
	DeadLetters uint64          `json:"deadLetters"`
}

// List summarises every tenant anything knows of: stored settings, stored
// events, health records and dead letters (a tenant nobody configured still
// has opt-outs that must be seen).
func (in *Inspector) List(ctx context.Context) ([]Summary, error) {
	stored, err := in.Settings.List(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, s := range stored {
		names[s.Tenant] = true
	}
	withEvents, err := natsx.EventTenants(ctx, in.JS, in.Topology)
	if err != nil {
		return nil, err
	}
	for _, t := range withEvents {
		names[t] = true
	}
	dead, err := (deadletter.DLQ{JS: in.JS, Topology: in.Topology}).Counts(ctx)
	if err != nil {
		return nil, err
	}
	for t := range dead {
		names[t] = true
	}
	if in.Health.KV != nil {
		keys, err := in.Health.KV.Keys(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, fmt.Errorf("health records: %w", err)
		}
		for _, k := range keys {
			names[k] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for t := range names {
		if event.ValidTenant(t) {
			sorted = append(sorted, t)
		}
	}
	sort.Strings(sorted)

	out := make([]Summary, 0, len(sorted))
	for _, t := range sorted {
		s, rev, err := in.Settings.GetRevision(ctx, t)
		if err != nil {
			return nil, err
		}
		sum := Summary{Tenant: t, Stored: rev > 0, Settings: s, TargetField: s.TargetField(), DeadLetters: dead[t]}
		if sum.Health, err = in.health(ctx, t); err != nil {
			return nil, err
		}
		b, err := eventstream.TenantBacklog(ctx, in.JS, in.Topology, t)
		if err != nil {
			return nil, err
		}
		sum.Backlog = b.Total()
		out = append(out, sum)
	}
	return out, nil
}
