// Package engine carries out one reconcile run of one tenant while its
// caller holds the tenant's lease: read the Salesforce opted-out set,
// stream the ledger against it (package diff), look up confirmed opt-outs
// missing from the set, apply the guards, then write the Sales Connect side
// (ledger entries and applied events) and the Salesforce side (sObject
// Collections, 200 records a call) and report.
//
// Every commit carries the lease's fence: ledger entries through the run's
// writer (ledger.Fenced by the lease: each write also asks the tenant's
// fence record), checkpoints and reports through runs.Store. What the
// ledger cannot fence (a Salesforce call, an applied event) is preceded by
// the writer's Check of the tenant's newest fence, the Salesforce calls by
// the write protocol itself (sfwrite.Batch). A run interrupted anywhere
// (crash, lost lease, shutdown) leaves its
// checkpoint; whoever holds the lease next resumes it by recomputing the
// diff, which no longer contains the writes already made (every write is
// idempotent and re-decided against the entry's current state), so the run
// ends as an uninterrupted one would.
package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/optout-sync/optout-sync/services/reconciler/budget"
	"github.com/optout-sync/optout-sync/services/reconciler/sfread"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/dupes"
	"github.com/optout-sync/optout-sync/shared/flow/ingest"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Config tunes runs.
type Config struct {
	Read sfread.Options
	// APIShare is the share of the org's remaining daily API allowance one
	// run may spend (Stitch and Airbyte default to 20% a run).
	APIShare float64
	// APIBudgetFallback is the budget when the allowance cannot be read
	// (GET /limits refused and no Sforce-Limit-Info seen).
	APIBudgetFallback int64
	// ResubscribeShare and ResubscribeMin: a run that would apply more
	// Salesforce-side resubscribes than max(ResubscribeMin,
	// ResubscribeShare × the ledger's opt-outs) stops before writing.
	ResubscribeShare float64
	ResubscribeMin   int64
	// LedgerWorkers write Sales Connect side changes concurrently;
	// LedgerBatch changes go between checkpoints.
	LedgerWorkers int
	LedgerBatch   int
	// WriteBatch is the records per sObject Collections call (≤ 200).
	WriteBatch int
	// WriteAttempts bounds tries of a batch's retryable failures within a run.
	WriteAttempts int
	WriteBackoff  time.Duration
	// MaxFailures: transient failures in a row after which a run is given
	// up (status failed); RetryBackoff spaces the resumptions (doubling).
	MaxFailures  int
	RetryBackoff time.Duration
	// ClaimTTL is how long a sales-field write's claim holds the push off
	// the person (optout.Claim); the write is given up before it ends.
	ClaimTTL time.Duration
	// FullEvery: a run is incremental unless the last full scan completed
	// longer ago than this (or none did, or one is asked for). 0: every
	// run is full.
	FullEvery time.Duration
	// Overlap is taken off the Salesforce watermark of an incremental
	// read: a record stamped before the mark whose transaction committed
	// after it (SystemModstamp is not commit order) is still read.
	Overlap time.Duration
}

// DefaultConfig is the production tuning.
func DefaultConfig() Config {
	return Config{
		Read:              sfread.DefaultOptions(),
		APIShare:          0.2,
		APIBudgetFallback: 1000,
		ResubscribeShare:  0.01,
		ResubscribeMin:    10,
		LedgerWorkers:     8,
		LedgerBatch:       200,
		WriteBatch:        200,
		WriteAttempts:     3,
		WriteBackoff:      500 * time.Millisecond,
		MaxFailures:       5,
		RetryBackoff:      time.Minute,
		ClaimTTL:          optout.DefaultClaimTTL,
		FullEvery:         7 * 24 * time.Hour,
		Overlap:           10 * time.Minute,
	}
}

// Lease is what a run needs of its lease: a context cancelled when the
// lease is lost, the fence every commit carries, and Valid, checked right
// before each commit so a holder that was paused past its lease (its
// watchdog not yet awake) refuses to write on its own clock.
type Lease interface {
	Context() context.Context
	Fence() uint64
	Valid() bool
}

// runFence is a run's lease as its writer's fence: Check (before a
// Salesforce call or an event the ledger cannot fence) also asks the
// tenant's fence record that no newer holder has raised it.
type runFence struct {
	Lease
	runs   runs.Store
	tenant string
}

func (f runFence) CheckFence(ctx context.Context) error {
	return f.runs.CheckFence(ctx, f.tenant, f.Fence())
}

// Hooks are seams for tests: At is called at named points of a run
// ("after-read", "after-diff", "before-ledger-batch", "before-applied",
// "before-ledger-write", "before-sf-batch", "after-sf-call" (the call
// answered, its outcomes not yet recorded), "before-finish", and
// "interrupted" when an attempt stops unfinished) so a test can pause or
// crash the run there.
type Hooks struct {
	At func(ctx context.Context, point string)
}

// Engine runs reconciles. One Engine serves every tenant of a replica.
type Engine struct {
	Cfg       Config
	Ledger    *ledger.Ledger
	Runs      runs.Store
	Publisher natsx.Publisher
	Topology  natsx.Topology
	Clients   sfwrite.Clients
	Tracer    trace.Tracer
	Metrics   *Metrics
	Log       zerolog.Logger
	// Holder names this replica in reports and fence records.
	Holder string
	Now    func() time.Time
	Hooks  Hooks
}

// Job is one run to carry out.
type Job struct {
	Tenant   string
	Settings tenant.Settings
	Lease    Lease
	RunID    string
	Trigger  runs.Trigger
	DryRun   bool
	// Resume is the checkpoint of the interrupted run this job continues.
	Resume *runs.Checkpoint
	// Full, when set, asks for a full scan and says why (a control
	// request's Full, e.g. "requested by optoutctl:ops"); otherwise the run
	// is incremental unless the engine finds a reason for a full one.
	Full string
	// Link is the requester's span (a control request), linked from the
	// run's own trace.
	Link trace.SpanContext
}

// ErrInterrupted: the run stopped without finishing (lease lost, fenced
// out, shutdown, or a transient failure) and left its checkpoint so it is
// resumed. The report returned with it is the progress so far.
var ErrInterrupted = errors.New("reconcile run interrupted; it will be resumed")

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Engine) tracer() trace.Tracer {
	if e.Tracer == nil {
		return noop.NewTracerProvider().Tracer("")
	}
	return e.Tracer
}

func (e *Engine) hook(ctx context.Context, point string) {
	if e.Hooks.At != nil {
		e.Hooks.At(ctx, point)
	}
}

// run is the state of one attempt.
type run struct {
	e     *Engine
	job   Job
	log   zerolog.Logger
	fence uint64
	field string // the Salesforce field compared (fixed for the run)
	// ledger is the run's writer: fenced by its lease, so every ledger
	// write of the run checks the lease and carries its fence.
	ledger *ledger.Writer
	client sfcreds.Client
	b      *budget.Budget
	prior  runs.API // API use of earlier attempts

	waiting      ingest.Waiting
	mu           sync.Mutex
	rep          runs.Report
	diffComplete bool
	failures     int
	// inFlight is the batch being written (saved with the checkpoint);
	// resumed is the one an interrupted attempt left uncounted.
	inFlight *runs.InFlight
	resumed  *runs.InFlight

	// live: a batch of Change Data Capture (Apply), not a run: no
	// checkpoint, report or run fence.
	live bool

	// watermark is the one an incremental run reads after; markSF and
	// markLedger are where this attempt read both sides from (the next
	// watermark, once the run completes); ledgerOptOuts the opt-outs its
	// diff counted.
	watermark     runs.Watermark
	markSF        time.Time
	markLedger    uint64
	ledgerOptOuts int64
}

func (r *run) scanKind() runs.ScanKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rep.Scan == nil {
		return runs.ScanFull
	}
	return r.rep.Scan.Kind
}

// chooseScan decides, once a run (kept by its resumed attempts), whether
// it is full or incremental, and why.
func (r *run) chooseScan(ctx context.Context) error {
	wm, err := r.e.Runs.Watermark(ctx, r.job.Tenant)
	if err != nil && !errors.Is(err, runs.ErrNotFound) {
		return err
	}
	r.watermark = wm
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rep.Scan != nil {
		return nil
	}
	full := func(why string) { r.rep.Scan = &runs.Scan{Kind: runs.ScanFull, Why: why} }
	every := r.e.Cfg.FullEvery
	switch {
	case r.job.Full != "":
		full(r.job.Full)
	case err != nil:
		full("no complete run yet")
	case wm.Field != r.field:
		full(fmt.Sprintf("the field compared changed (%s, was %s)", r.field, wm.Field))
	case every <= 0:
		full("every run is a full scan (OPTOUT_RECONCILE_FULL_EVERY=0)")
	case !r.e.now().Before(wm.FullAt.Add(every)):
		full(fmt.Sprintf("periodic full scan: the last one completed %s, every %s", wm.FullAt.Format(time.RFC3339), every))
	default:
		r.rep.Scan = &runs.Scan{Kind: runs.ScanIncremental,
			Why: fmt.Sprintf("changes since the last complete run %s; the last full scan completed %s, the next is due %s after it", wm.RunID, wm.FullAt.UTC().Format(time.RFC3339), every)}
	}
	return nil
}

// saveWatermark records where this run read both sides from, once it
// completed: succeeded, not a dry run, nothing failed (a failed write is
// a disagreement left behind, which the next run must see again).
func (r *run) saveWatermark(ctx context.Context, rep runs.Report) error {
	if rep.Status != runs.StatusSucceeded || rep.DryRun || rep.Scan == nil ||
		rep.Writes.SalesforceFailed > 0 || rep.Writes.LedgerFailed > 0 {
		return nil
	}
	if r.markSF.IsZero() {
		// No response carried Salesforce's time: the watermark stays.
		r.log.Warn().Msg("no Salesforce response carried a Date: the watermark is left where it was")
		return nil
	}
	w := runs.Watermark{RunID: rep.RunID, Field: r.field, Salesforce: r.markSF, LedgerSeq: r.markLedger,
		FullAt: r.watermark.FullAt, LedgerOptOuts: r.watermark.LedgerOptOuts}
	if rep.Scan.Kind == runs.ScanFull {
		w.FullAt, w.LedgerOptOuts = r.e.now(), r.ledgerOptOuts
	}
	return r.e.Runs.SetWatermark(ctx, rep.Tenant, r.fence, w)
}

// Run carries out job under its lease and returns the run's report. A nil
// error means the run reached a final status (see Report.Status); an error
// wrapping ErrInterrupted means it will be resumed.
func (e *Engine) Run(ctx context.Context, job Job) (runs.Report, error) {
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(), // a run is its own trace; a requester is linked
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(
			attribute.String("optout.tenant", job.Tenant),
			attribute.String("reconcile.run_id", job.RunID),
			attribute.Bool("reconcile.dry_run", job.DryRun),
			attribute.String("reconcile.trigger", string(job.Trigger.Kind)),
			attribute.Int64("reconcile.fence", int64(job.Lease.Fence())),
		),
	}
	if job.Link.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: job.Link}))
	}
	ctx, span := e.tracer().Start(ctx, "reconcile.run", opts...)
	defer span.End()

	r := &run{e: e, job: job, fence: job.Lease.Fence()}
	r.log = logx.WithTenant(e.Log, job.Tenant).With().Str("run_id", job.RunID).Uint64("fence", r.fence).Ctx(ctx).Logger()
	r.init(span)
	err := r.do(ctx)
	rep := r.report()
	span.SetAttributes(attribute.String("reconcile.status", string(rep.Status)), attribute.Int("reconcile.attempt", rep.Attempts))
	for _, c := range classCounts(rep.Counts) {
		span.SetAttributes(attribute.Int64("reconcile.count."+c.name, c.n))
	}
	if err != nil {
		e.hook(ctx, "interrupted")
		span.RecordError(err)
		span.SetStatus(codes.Error, "interrupted")
		r.log.Warn().Err(err).Str("phase", string(rep.Phase)).Msg("reconcile run interrupted")
		return rep, err
	}
	if rep.Status == runs.StatusFailed {
		span.SetStatus(codes.Error, rep.Reason)
	}
	return rep, nil
}

func (r *run) init(span trace.Span) {
	j := r.job
	if cp := j.Resume; cp != nil {
		r.rep = cp.Report
		r.rep.Attempts++
		r.diffComplete = cp.DiffComplete
		r.failures = cp.Failures
		r.prior = cp.Report.API
		r.resumed = cp.InFlight
	} else {
		r.rep = runs.Report{
			RunID: j.RunID, Tenant: j.Tenant, DryRun: j.DryRun, Trigger: j.Trigger,
			StartedAt: r.e.now(), Attempts: 1,
		}
	}
	r.field = j.Settings.TargetField()
	r.ledger = r.e.Ledger.Writer(j.Tenant, r.field, ledger.Fenced(runFence{Lease: j.Lease, runs: r.e.Runs, tenant: j.Tenant}))
	r.rep.Field = r.field
	r.rep.Policy = j.Settings.ConflictPolicy
	if r.rep.Policy == "" {
		r.rep.Policy = tenant.PolicyOptOutWins
	}
	r.rep.Status, r.rep.Phase, r.rep.Reason = runs.StatusRunning, runs.PhaseStarting, ""
	r.rep.Fence, r.rep.Holder = r.fence, r.e.Holder
	if sc := span.SpanContext(); sc.IsValid() {
		r.rep.TraceID = sc.TraceID().String()
	}
}

// report returns a copy of the report with the API counters brought up to date.
func (r *run) report() runs.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncAPI()
	rep := r.rep
	rep.API.ReadPath = cloneMap(r.rep.API.ReadPath)
	rep.Guard = cloneGuard(r.rep.Guard)
	if r.rep.Scan != nil {
		sc := *r.rep.Scan // saved while the run goes on changing it
		rep.Scan = &sc
	}
	return rep
}

func (r *run) syncAPI() {
	if r.b == nil {
		return
	}
	a := &r.rep.API
	a.Spent = r.prior.Spent + r.b.Spent()
	a.Reads = r.prior.Reads + r.b.SpentOn(budget.Read)
	a.Lookups = r.prior.Lookups + r.b.SpentOn(budget.Lookup)
	a.Writes = r.prior.Writes + r.b.SpentOn(budget.Write)
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneGuard(g *runs.Guard) *runs.Guard {
	if g == nil {
		return nil
	}
	c := *g
	return &c
}

func (r *run) update(f func(rep *runs.Report)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.rep)
}

// enter starts a phase and records it, so progress readers see it at once.
func (r *run) enter(ctx context.Context, p runs.Phase) error {
	r.update(func(rep *runs.Report) { rep.Phase = p })
	return r.save(ctx, time.Time{}, "")
}

// save writes the checkpoint (fenced); a live batch has none.
func (r *run) save(ctx context.Context, retryAt time.Time, lastErr string) error {
	if r.live {
		return nil
	}
	rep := r.report()
	r.mu.Lock()
	cp := runs.Checkpoint{Report: rep, DiffComplete: r.diffComplete, RetryAt: retryAt, Failures: r.failures, LastError: lastErr, InFlight: r.inFlight}
	if cp.InFlight == nil {
		cp.InFlight = r.resumed // not yet counted by this attempt either
	}
	r.mu.Unlock()
	if err := r.e.Runs.SaveCheckpoint(ctx, cp); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// stop is a final outcome decided during the run.
type stop struct {
	status runs.Status
	reason string
}

func (s *stop) Error() string { return string(s.status) + ": " + s.reason }

func stopWith(status runs.Status, format string, args ...any) error {
	return &stop{status: status, reason: fmt.Sprintf(format, args...)}
}

// do runs the attempt and turns its outcome into a final report or an
// interruption.
func (r *run) do(ctx context.Context) error {
	err := r.attempt(ctx)
	var st *stop
	switch {
	case err == nil && r.waiting.Count > 0:
		return r.finish(ctx, runs.StatusIncomplete, fmt.Sprintf("%d Sales Connect events waited unfolded in the events stream (oldest stored %s); the pusher or the next run folds them",
			r.waiting.Count, r.waiting.Oldest.UTC().Format(time.RFC3339)))
	case err == nil:
		return r.finish(ctx, runs.StatusSucceeded, "")
	case errors.As(err, &st):
		return r.finish(ctx, st.status, st.reason)
	case ctx.Err() != nil || errors.Is(err, runs.ErrFenced) || errors.Is(err, ledger.ErrFenced):
		// Lost lease, newer holder, shutdown: nothing more may be written.
		return fmt.Errorf("%w: %w", ErrInterrupted, errOrCause(ctx, err))
	case errors.Is(err, budget.ErrExhausted) || (r.b != nil && r.b.Exhausted()):
		return r.finish(ctx, runs.StatusStoppedBudget, fmt.Sprintf("the run's API budget (%d calls, %.0f%% of the org's remaining daily allowance) is spent; the next run continues", r.report().API.Budget, r.e.Cfg.APIShare*100))
	}
	switch salesforce.ClassOf(err) {
	case salesforce.Quota:
		return r.finish(ctx, runs.StatusStoppedBudget, "the org's daily API allowance is spent; the next run continues: "+err.Error())
	case salesforce.PermanentTenant, salesforce.Auth:
		return r.finish(ctx, runs.StatusFailed, "an admin must fix the tenant's Salesforce setup: "+err.Error())
	}
	// Transient (Salesforce, NATS): resumed later, or given up.
	r.failures++
	if r.failures >= r.e.Cfg.MaxFailures {
		return r.finish(ctx, runs.StatusFailed, fmt.Sprintf("gave up after %d transient failures in a row; last: %v", r.failures, err))
	}
	wait := r.e.Cfg.RetryBackoff << min(r.failures-1, 5)
	// This attempt is alive and counted what it wrote of its last batch:
	// the attempt that resumes must not count it again.
	r.setInFlight(nil)
	if serr := r.save(context.WithoutCancel(ctx), r.e.now().Add(wait), err.Error()); serr != nil {
		return fmt.Errorf("%w: %w (and %w)", ErrInterrupted, err, serr)
	}
	return fmt.Errorf("%w after a transient failure (retry in %s): %w", ErrInterrupted, wait, err)
}

func errOrCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if c := context.Cause(ctx); c != nil {
			return c
		}
	}
	return err
}

// finish records a final status: report (fenced), last success, checkpoint
// removed, report event, metrics.
func (r *run) finish(ctx context.Context, status runs.Status, reason string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrInterrupted, errOrCause(ctx, ctx.Err()))
	}
	r.e.hook(ctx, "before-finish")
	now := r.e.now()
	r.update(func(rep *runs.Report) {
		rep.Status, rep.Reason, rep.Phase = status, reason, runs.PhaseDone
		// A run that never finished its diff knows nothing of what
		// remains: it says so rather than "0 remain".
		rep.NotCompared = !r.diffComplete
		rep.FinishedAt = now
		rep.DurationSeconds = now.Sub(rep.StartedAt).Seconds()
	})
	rep := r.report()
	if err := r.e.Runs.SaveReport(ctx, rep); err != nil {
		return fmt.Errorf("%w: save report: %w", ErrInterrupted, err)
	}
	if status == runs.StatusSucceeded && !rep.DryRun {
		if err := r.e.Runs.SetLastSuccess(ctx, rep.Tenant, r.fence, runs.LastSuccess{RunID: rep.RunID, Trigger: rep.Trigger, FinishedAt: now}); err != nil {
			return fmt.Errorf("%w: record last success: %w", ErrInterrupted, err)
		}
	}
	if err := r.saveWatermark(ctx, rep); err != nil {
		return fmt.Errorf("%w: record the watermark: %w", ErrInterrupted, err)
	}
	if err := r.e.Runs.ClearCheckpoint(ctx, rep.Tenant, r.fence); err != nil {
		return fmt.Errorf("%w: clear checkpoint: %w", ErrInterrupted, err)
	}
	if err := r.e.publishReport(ctx, rep); err != nil {
		// The KV report is the record; the event is a notification.
		r.log.Warn().Err(err).Msg("publishing the run report event failed")
	}
	r.e.Metrics.finished(ctx, rep)
	ev := r.log.Info()
	if status != runs.StatusSucceeded {
		ev = r.log.Warn()
	}
	ev.Str("status", string(status)).Str("reason", reason).Bool("dry_run", rep.DryRun).
		Int64("in_both", rep.Counts.InBoth).Int64("sales_connect_only", rep.Counts.SalesConnectOnly).
		Int64("salesforce_only", rep.Counts.SalesforceOnly).Int64("known_to_salesforce_only", rep.Counts.KnownToSalesforceOnly).
		Int64("salesforce_written", rep.Writes.SalesforceWritten).Int64("ledger_written", rep.Writes.LedgerWritten).
		Int64("ledger_confirmations", rep.Writes.LedgerConfirmations).Int64("events_published", rep.Writes.EventsPublished).
		Bool("not_compared", rep.NotCompared).
		Int64("api_spent", rep.API.Spent).Float64("duration_s", rep.DurationSeconds).Msg("reconcile run finished")
	return nil
}

// attempt does the work; a nil error means everything planned was written.
func (r *run) attempt(ctx context.Context) error {
	e, j := r.e, r.job
	if err := e.Runs.RaiseFence(ctx, j.Tenant, r.fence, j.RunID, e.Holder); err != nil {
		return err
	}
	if err := r.saveProgress(ctx); err != nil {
		return err
	}
	client, err := e.Clients.Get(ctx, j.Tenant)
	if err != nil {
		return stopWith(runs.StatusFailed, "no usable Salesforce credentials: %v", err)
	}
	r.client = client
	// Salesforce calls run under their own context, cancelled the moment
	// the budget refuses a call, so nothing keeps retrying (a Bulk job poll
	// would) against a spent budget.
	r.b = budget.New(-1)
	sfctx, cancelSF := context.WithCancelCause(ctx)
	defer cancelSF(nil)
	r.b.OnExhausted(func() { cancelSF(budget.ErrExhausted) })
	sfctx = budget.With(sfctx, r.b)
	if err := r.setBudget(sfctx); err != nil {
		return err
	}
	field := r.field
	if err := client.CheckOptOutField(sfctx, field); err != nil {
		return fmt.Errorf("check field %s: %w", field, err)
	}

	if err := r.foldWaiting(ctx); err != nil {
		return err
	}
	if err := r.chooseScan(ctx); err != nil {
		return err
	}
	if err := r.duplicates(ctx, sfctx); err != nil {
		return err
	}
	plan, err := r.diff(ctx, sfctx)
	if err != nil {
		return err
	}
	if err := r.guard(); err != nil {
		return err
	}
	if j.DryRun {
		r.update(func(rep *runs.Report) {
			rep.Writes.Remaining = int64(plan.SFRecords() + len(plan.LedgerOps))
			rep.Preview = plan.Preview(runs.PreviewLimit)
		})
		return nil
	}
	if err := r.writeSalesConnect(ctx, plan.LedgerOps); err != nil {
		return err
	}
	return r.writeSalesforce(ctx, sfctx, plan.SFWrites)
}

// foldWaiting folds the tenant's events the pusher has not settled (the
// pusher down or behind) into the ledger first, through the same ingest
// and state machine as the pusher, so the diff sees them. The drain reads
// them from the stream itself, so none is out of its reach (a run no
// longer waits on events a pusher holds); invalid ones are the pusher's to
// dead-letter. A dry run changes nothing: it only counts them.
func (r *run) foldWaiting(ctx context.Context) error {
	e, j := r.e, r.job
	in := &ingest.Ingester{Ledger: e.Ledger, Topology: e.Topology, Now: e.Now,
		DLQ:   deadletter.DeadLetterer{JS: e.Publisher.JS, Topology: e.Topology},
		Field: func(string) string { return r.field }}
	if j.DryRun {
		w, err := in.Waiting(ctx, e.Publisher.JS, j.Tenant)
		r.waiting = w
		r.update(func(rep *runs.Report) { rep.Writes.EventsWaiting = int64(w.Count) })
		return err
	}
	d, err := in.Drain(ctx, e.Publisher.JS, j.Tenant, nil)
	r.waiting = ingest.Waiting{}
	r.update(func(rep *runs.Report) {
		rep.Writes.EventsFolded += int64(d.Folded)
		rep.Writes.EventsWaiting = 0
	})
	if err != nil {
		return fmt.Errorf("fold waiting events: %w", err)
	}
	if d.Folded > 0 || d.Invalid > 0 {
		r.log.Info().Int("events", d.Folded).Int("already_folded", d.AlreadyFolded).Int("invalid", d.Invalid).
			Msg("folded Sales Connect events the pusher had not settled (invalid ones are left for the pusher to dead-letter)")
	}
	return nil
}

// dupesChunk is how many opted-out persons' records one lookup of
// duplicates takes (a few Salesforce queries each).
const dupesChunk = 500

// duplicates records, with the tenant's DuplicatesByEmail, the opt-out of
// every Lead and Contact sharing its address with a person who opted out
// and not opted out yet: the ones the push and the CDC stream missed (a
// lookup that failed, a record created while CDC was off or behind). The
// diff that follows finds them opted out in Sales Connect only and writes
// them, as any other. A dry run looks for none: it changes nothing.
func (r *run) duplicates(ctx, sfctx context.Context) error {
	e, j := r.e, r.job
	if j.DryRun || !j.Settings.DuplicatesByEmail {
		return nil
	}
	f := dupes.Flow{Tenant: j.Tenant, SF: r.client, Ledger: e.Ledger, Writer: r.ledger}
	var ids []string
	found := 0
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		res, err := f.Apply(sfctx, nil, ids)
		ids = ids[:0]
		found += len(res.Keys)
		return err
	}
	err := e.Ledger.Scan(ctx, j.Tenant, func(it ledger.ScanItem) error {
		if !dupes.IsSource(it.Entry) {
			return nil
		}
		ids = append(ids, it.Entry.SalesforceID)
		if len(ids) < dupesChunk {
			return nil
		}
		return flush()
	}, func(key string, err error) {
		r.log.Warn().Err(err).Str("key", key).Msg("undecodable ledger entry skipped")
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("duplicates by email: %w", err)
	}
	if found > 0 {
		r.log.Info().Int("duplicates", found).Msg("duplicates by email opted out by the run")
	}
	return nil
}

// saveProgress writes the report (status running) and the checkpoint.
func (r *run) saveProgress(ctx context.Context) error {
	if err := r.e.Runs.SaveReport(ctx, r.report()); err != nil {
		return fmt.Errorf("save report: %w", err)
	}
	return r.save(ctx, time.Time{}, "")
}

// setBudget sets the run's API budget: APIShare of the org's remaining
// daily allowance, taken once when the run starts and kept by its resumed
// attempts.
func (r *run) setBudget(ctx context.Context) error {
	r.mu.Lock()
	total := r.rep.API.Budget
	r.mu.Unlock()
	if total > 0 {
		r.b.SetLimit(max(total-r.prior.Spent, 0))
		return nil
	}
	remaining := int64(-1)
	limits, err := r.client.Limits(budget.WithKind(ctx, budget.Other))
	switch {
	case err == nil:
		if l, ok := limits["DailyApiRequests"]; ok {
			remaining = l.Remaining
		}
	case errors.Is(err, budget.ErrExhausted) || salesforce.ClassOf(err) == salesforce.Quota:
		return err
	}
	if remaining < 0 {
		// /limits needs "View Setup and Configuration"; every response
		// (errors too) carries Sforce-Limit-Info.
		if u, ok := r.client.LastAPIUsage(); ok {
			remaining = max(u.Max-u.Used, 0)
		}
	}
	total = r.e.Cfg.APIBudgetFallback
	if remaining >= 0 {
		total = int64(math.Floor(r.e.Cfg.APIShare * float64(remaining)))
	} else {
		r.log.Warn().Err(err).Int64("budget", total).Msg("the org's API allowance is unreadable; using the fallback budget")
	}
	r.update(func(rep *runs.Report) {
		rep.API.RemainingAtStart = remaining
		rep.API.Budget = total
	})
	r.b.SetLimit(total)
	if total <= r.b.Spent() {
		return fmt.Errorf("%w (budget %d calls)", budget.ErrExhausted, total)
	}
	return nil
}

// guard applies the mass-resubscribe guard.
func (r *run) guard() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.rep.Guard
	limit := max(r.e.Cfg.ResubscribeMin, int64(math.Ceil(r.e.Cfg.ResubscribeShare*float64(g.OptOuts))))
	g.Limit, g.Share, g.Min = limit, r.e.Cfg.ResubscribeShare, r.e.Cfg.ResubscribeMin
	if g.Resubscribes <= limit {
		return nil
	}
	g.Tripped = true
	r.rep.Writes.Remaining = r.rep.Writes.PlannedSalesforce + r.rep.Writes.PlannedSalesConnect
	return &stop{status: runs.StatusStoppedGuard, reason: fmt.Sprintf(
		"mass-resubscribe guard: the run would apply %d Salesforce-side resubscribes, more than %d (%.2f%% of %d opt-outs, at least %d); nothing was written. Check for a bulk edit of %s in Salesforce, then run again or raise the threshold",
		g.Resubscribes, limit, r.e.Cfg.ResubscribeShare*100, g.OptOuts, r.e.Cfg.ResubscribeMin, r.field)}
}
