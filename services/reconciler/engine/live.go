package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/diff"
	"github.com/optout-sync/optout-sync/services/reconciler/idset"
	"github.com/optout-sync/optout-sync/services/reconciler/sfread"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/dupes"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Change is one record's opt-out field as a Change Data Capture event
// reported it: its value after the change, committed at At.
type Change struct {
	ID    string
	Value bool
	At    time.Time
}

// Changes is a batch of Salesforce-side changes learnt between runs (the
// CDC subscriber). It goes through the run's own diff and writes, on the
// records named only: what the nightly run would decide for them, it
// decides now.
type Changes struct {
	Tenant string
	// Settings are the tenant's (field and conflict policy).
	Settings tenant.Settings
	// Lease is the subscriber's lease; Check asks, with a round trip, that
	// no newer holder took over (before what the ledger cannot fence: an
	// applied event, a Salesforce write).
	Lease Lease
	Check func(ctx context.Context) error
	// Records carry their value; Reread are read by id first (a gap event
	// names records without values).
	Records []Change
	Reread  []string
	// New are Leads and Contacts created, undeleted or given another
	// address, with the address the event carried: with the tenant's
	// DuplicatesByEmail, one whose address is already opted out is opted
	// out as a duplicate (shared/flow/dupes).
	New []dupes.Record
}

// Applied is what a batch did.
type Applied struct {
	Counts runs.Counts
	Writes runs.Writes
}

// ErrGuard: the batch would apply more Salesforce-side resubscribes than
// the mass-resubscribe guard's minimum; nothing was written and the
// nightly run (with its guard over the whole ledger) is the one to decide.
var ErrGuard = errors.New("mass-resubscribe guard: too many Salesforce-side resubscribes in one batch")

// liveFence checks the subscriber's lease without stamping entries: its
// fence counter is not the nightly run's (ledger.Guarded).
type liveFence struct {
	Lease
	check func(ctx context.Context) error
}

func (f liveFence) CheckFence(ctx context.Context) error {
	if f.check == nil {
		return nil
	}
	return f.check(ctx)
}

// Apply applies a batch of Salesforce-side changes of one tenant through
// the diff (package diff: the same classes, the same conflict policy) and
// the run's writers (applied events, ledger entries through the state
// machine, Salesforce writes through sfwrite). A Salesforce-side clear of
// a confirmed opt-out is written back under optout-wins and applied under
// latest-wins, exactly as a run decides it. Records unknown to the ledger
// and not opted out are left alone.
func (e *Engine) Apply(ctx context.Context, c Changes) (Applied, error) {
	ctx, span := e.tracer().Start(ctx, "reconcile.cdc_apply", trace.WithAttributes(
		attribute.String("optout.tenant", c.Tenant), attribute.Int("cdc.records", len(c.Records)), attribute.Int("cdc.reread", len(c.Reread))))
	r := &run{e: e, job: Job{Tenant: c.Tenant, Settings: c.Settings, Lease: c.Lease, RunID: "cdc",
		Trigger: runs.Trigger{Kind: runs.TriggerCDC}}, fence: c.Lease.Fence(), live: true}
	r.log = logx.WithTenant(e.Log, c.Tenant).With().Str("via", "cdc").Ctx(ctx).Logger()
	r.init(span)
	r.ledger = e.Ledger.Writer(c.Tenant, r.field, ledger.Guarded(liveFence{Lease: c.Lease, check: c.Check}))
	err := r.apply(ctx, c)
	rep := r.report()
	endSpan(span, err)
	return Applied{Counts: rep.Counts, Writes: rep.Writes}, err
}

func (r *run) apply(ctx context.Context, c Changes) error {
	e := r.e
	field, policy := r.field, r.rep.Policy
	client, err := e.Clients.Get(ctx, c.Tenant)
	if err != nil {
		return fmt.Errorf("salesforce credentials: %w", err)
	}
	r.client = client
	r.b = budget.New(-1) // a batch is a handful of calls; the allocation is the stream's
	sfctx := budget.With(ctx, r.b)

	var trueSet idset.Builder
	cleared := map[idset.ID]diff.Found{}
	var ids []idset.ID
	note := func(id idset.ID, value bool, at int64) {
		ids = append(ids, id)
		if value {
			trueSet.Add(id, at)
			delete(cleared, id)
			return
		}
		if f, ok := cleared[id]; !ok || f.Modstamp < at {
			cleared[id] = diff.Found{Value: false, Modstamp: at}
		}
	}
	for _, ch := range c.Records {
		id, err := idset.Parse(ch.ID)
		if err != nil {
			r.log.Warn().Err(err).Msg("change event with a malformed record id skipped")
			continue
		}
		note(id, ch.Value, ch.At.UnixMilli())
	}
	if len(c.Reread) > 0 {
		var read []idset.ID
		for _, s := range c.Reread {
			if id, err := idset.Parse(s); err == nil {
				read = append(read, id)
			}
		}
		if err := sfread.Lookup(sfctx, client, field, read, func(f sfread.Found) { note(f.ID, f.Value, f.Modstamp) }); err != nil {
			return err
		}
	}
	if c.Settings.DuplicatesByEmail && len(c.New) > 0 {
		res, err := dupes.Flow{Tenant: c.Tenant, SF: client, Ledger: e.Ledger, Writer: r.ledger}.Apply(sfctx, c.New, nil)
		if err != nil {
			return err
		}
		for _, s := range res.IDs {
			id, err := idset.Parse(s)
			if err != nil {
				continue
			}
			// The false a new record was created with is not a resubscribe
			// of the opt-out it now carries: only the write is due.
			delete(cleared, id)
			ids = append(ids, id)
		}
	}
	cl := diff.New(c.Tenant, field, policy, trueSet.Build())
	seen := map[string]bool{}
	for _, id := range ids {
		it, err := e.Ledger.Get(ctx, optout.Key(c.Tenant, "", id.String()), ledger.ViaAlias(), ledger.FollowMerges())
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if seen[it.Key] {
			continue
		}
		seen[it.Key] = true
		cl.Add(it.Key, it.Entry)
	}
	cl.Finish()
	cl.Resolve(func(id idset.ID) (diff.Found, bool) { f, ok := cleared[id]; return f, ok })
	plan := cl.Plan
	r.update(func(rep *runs.Report) {
		rep.Counts = cl.Counts
		rep.Writes.PlannedSalesforce = int64(plan.SFRecords())
		rep.Writes.PlannedSalesConnect = int64(len(plan.LedgerOps))
	})
	if n := cl.Resubscribes(); n > e.Cfg.ResubscribeMin {
		return fmt.Errorf("%w (%d, more than %d)", ErrGuard, n, e.Cfg.ResubscribeMin)
	}
	if err := r.writeSalesConnect(ctx, plan.LedgerOps); err != nil {
		return err
	}
	return r.writeSalesforce(ctx, sfctx, plan.SFWrites)
}
