// Package service is one reconciler replica: it starts each tenant's run at
// its daily slot (and a missed slot at start), resumes interrupted runs,
// and answers control requests, taking the tenant's Redis lease first so
// only one replica works on a tenant at a time.
//
// Exactly one run per tenant per slot: the slot is claimed in KV with
// compare-and-set while holding the lease, so even two replicas that both
// think they hold the lease cannot both claim it. Tenants spread across
// replicas: each pass tries the due tenants in random order, takes a lease
// without waiting, and a replica running MaxConcurrent runs leaves the rest
// to the others.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/schedule"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Settings is the live view of tenant settings (*tenant.Cache).
type Settings interface {
	Get(tenant string) tenant.Settings
	Tenants() []string
}

// QueueGroup is the control subscription's queue group: a request reaches
// one replica.
const QueueGroup = "optout-reconciler"

// Service is one replica.
type Service struct {
	Engine   *engine.Engine
	Locker   *lock.Locker
	Runs     runs.Store
	Settings Settings
	NC       *nats.Conn
	Topology natsx.Topology
	Replica  string
	Log      zerolog.Logger
	// Now is the clock (tests inject one; schedules are computed with it).
	Now func() time.Time
	// Tick is how often due tenants are looked for (default 30s).
	Tick time.Duration
	// MaxConcurrent bounds this replica's scheduled runs (default 2);
	// manual runs are not counted against it.
	MaxConcurrent int

	once    sync.Once
	mu      sync.Mutex
	rng     *rand.Rand
	running map[string]string // tenant → run id
	slots   chan struct{}
	wg      sync.WaitGroup
	closed  bool
}

func (s *Service) init() {
	s.once.Do(func() {
		if s.Tick <= 0 {
			s.Tick = 30 * time.Second
		}
		if s.MaxConcurrent <= 0 {
			s.MaxConcurrent = 2
		}
		s.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		s.running = map[string]string{}
		s.slots = make(chan struct{}, s.MaxConcurrent)
	})
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Run answers control requests and starts due runs every Tick until ctx
// ends; then it stops taking work and waits for its runs, which stop at
// their next step and leave a checkpoint another replica resumes.
func (s *Service) Run(ctx context.Context) error {
	s.init()
	sub, err := s.NC.QueueSubscribe(s.Topology.ControlSubject(runs.ControlVerb, "*"), QueueGroup, func(m *nats.Msg) {
		s.handleControl(ctx, m)
	})
	if err != nil {
		return fmt.Errorf("subscribe to control requests: %w", err)
	}
	defer s.Wait()
	defer func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		_ = sub.Unsubscribe()
	}()
	t := time.NewTicker(s.Tick)
	defer t.Stop()
	for {
		if err := s.RunDue(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Msg("looking for due reconcile runs failed; retrying at the next tick")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Wait waits for the runs this replica started.
func (s *Service) Wait() { s.wg.Wait() }

// Running lists the tenants this replica is running now.
func (s *Service) Running() map[string]string {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.running))
	for k, v := range s.running {
		out[k] = v
	}
	return out
}

type candidate struct {
	tenant string
	slot   time.Time // zero: resume an interrupted run
}

// RunDue starts (in the background) every run that is due at Now: each
// sync-enabled tenant whose latest slot has not been claimed and was not
// before sync was turned on (schedule.NextRun), and each interrupted run
// whose retry time has come.
func (s *Service) RunDue(ctx context.Context) error {
	s.init()
	now := s.now()
	active, err := s.Runs.ListActive(ctx)
	if err != nil {
		return err
	}
	var cands []candidate
	unfinished := map[string]bool{}
	for _, cp := range active {
		unfinished[cp.Report.Tenant] = true
		if !cp.RetryAt.After(now) {
			cands = append(cands, candidate{tenant: cp.Report.Tenant})
		}
	}
	var errs []error
	for _, t := range s.Settings.Tenants() {
		st := s.Settings.Get(t)
		if !st.SyncEnabled || unfinished[t] {
			continue
		}
		clock, err := schedule.Parse(st.ScheduleTime, st.ScheduleZone)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", t, err))
			continue
		}
		claim, err := s.Runs.Slot(ctx, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// A slot from before sync was turned on is never caught up.
		if slot, due := schedule.NextRun(clock, claim.Slot, st.SyncSince, now); due {
			cands = append(cands, candidate{tenant: t, slot: slot})
		}
	}
	s.mu.Lock()
	s.rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	s.mu.Unlock()
	for _, c := range cands {
		if err := s.tryScheduled(ctx, c, now); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", c.tenant, err))
		}
	}
	return errors.Join(errs...)
}

// acquire takes the tenant's lease without waiting (nil when another
// replica holds it), with a fence above the newest the runs bucket saw.
func (s *Service) acquire(ctx context.Context, t string) (*lock.Lease, error) {
	f, err := s.Runs.Fence(ctx, t)
	if err != nil {
		return nil, err
	}
	lease, err := s.Locker.TryAcquire(ctx, t, lock.MinFence(f.Fence))
	if errors.Is(err, lock.ErrNotAcquired) {
		return nil, nil
	}
	return lease, err
}

func release(lease *lock.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = lease.Release(ctx)
}

func (s *Service) busy(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.running[t]
	return ok || s.closed
}

func (s *Service) tryScheduled(ctx context.Context, c candidate, now time.Time) (err error) {
	if s.busy(c.tenant) {
		return nil
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return nil // at capacity: another replica takes it
	}
	launched := false
	defer func() {
		if !launched {
			<-s.slots
		}
	}()
	lease, err := s.acquire(ctx, c.tenant)
	if lease == nil || err != nil {
		return err
	}
	defer func() {
		if !launched {
			release(lease)
		}
	}()
	// With the lease held, look again: another replica may just have
	// finished this run or claimed this slot.
	job, err := s.jobFor(lease, c, now)
	if job == nil || err != nil {
		return err
	}
	launched = s.launch(lease, *job, true)
	return nil
}

// jobFor decides what to run for a candidate while holding its lease; nil
// when nothing is due any more.
func (s *Service) jobFor(lease *lock.Lease, c candidate, now time.Time) (*engine.Job, error) {
	ctx := lease.Context()
	st := s.Settings.Get(c.tenant)
	cp, err := s.Runs.Active(ctx, c.tenant)
	switch {
	case err == nil:
		if cp.Report.DryRun {
			return nil, s.abandon(ctx, lease, cp)
		}
		if cp.RetryAt.After(now) {
			return nil, nil
		}
		return &engine.Job{Tenant: c.tenant, Settings: st, Lease: lease, RunID: cp.Report.RunID,
			Trigger: cp.Report.Trigger, Resume: &cp}, nil
	case !errors.Is(err, runs.ErrNotFound):
		return nil, err
	case c.slot.IsZero():
		return nil, nil // the interrupted run finished meanwhile
	}
	runID := runs.NewRunID(now)
	ok, err := s.Runs.ClaimSlot(ctx, c.tenant, c.slot, runID, s.Replica)
	if !ok || err != nil {
		return nil, err
	}
	kind := runs.TriggerSchedule
	if now.Sub(c.slot) > max(2*s.Tick, time.Minute) {
		kind = runs.TriggerCatchUp
	}
	return &engine.Job{Tenant: c.tenant, Settings: st, Lease: lease, RunID: runID,
		Trigger: runs.Trigger{Kind: kind, Slot: c.slot.UTC()}}, nil
}

// abandon finishes an interrupted dry run: it is cheap to repeat and must
// not keep real runs waiting.
func (s *Service) abandon(ctx context.Context, lease *lock.Lease, cp runs.Checkpoint) error {
	t := cp.Report.Tenant
	if err := s.Runs.RaiseFence(ctx, t, lease.Fence(), cp.Report.RunID, s.Replica); err != nil {
		return err
	}
	rep := cp.Report
	rep.Status, rep.Phase, rep.Fence, rep.Holder = runs.StatusAbandoned, runs.PhaseDone, lease.Fence(), s.Replica
	rep.Reason = "interrupted dry run dropped; request a new one"
	rep.FinishedAt = s.now().UTC()
	rep.DurationSeconds = rep.FinishedAt.Sub(rep.StartedAt).Seconds()
	if err := s.Runs.SaveReport(ctx, rep); err != nil {
		return err
	}
	return s.Runs.ClearCheckpoint(ctx, t, lease.Fence())
}

// launch runs job in the background and releases the lease after; false
// when the replica is shutting down.
func (s *Service) launch(lease *lock.Lease, job engine.Job, counted bool) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.running[job.Tenant] = job.RunID
	s.wg.Add(1)
	s.mu.Unlock()
	log := s.Log.With().Str("tenant", job.Tenant).Str("run_id", job.RunID).Logger()
	log.Info().Str("trigger", string(job.Trigger.Kind)).Bool("dry_run", job.DryRun).Bool("resume", job.Resume != nil).
		Uint64("fence", lease.Fence()).Msg("reconcile run starting")
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, job.Tenant)
			s.mu.Unlock()
			if counted {
				<-s.slots
			}
		}()
		defer release(lease)
		if _, err := s.Engine.Run(lease.Context(), job); err != nil {
			log.Warn().Err(err).Msg("reconcile run interrupted")
		}
	}()
	return true
}

// Trigger starts a run of tenant now (a control request), or resumes its
// interrupted run; link is the requester's span, if any.
func (s *Service) Trigger(ctx context.Context, t string, req runs.ControlRequest, link trace.SpanContext) runs.ControlReply {
	s.init()
	rep := runs.ControlReply{Tenant: t, DryRun: req.DryRun, Replica: s.Replica}
	refuse := func(code, format string, args ...any) runs.ControlReply {
		rep.Code, rep.Error = code, fmt.Sprintf(format, args...)
		return rep
	}
	if !event.ValidTenant(t) {
		return refuse(runs.CodeBadRequest, "tenant id %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
	}
	st := s.Settings.Get(t)
	if !req.DryRun && !st.SyncEnabled {
		return refuse(runs.CodeSyncDisabled, "Salesforce sync is disabled for tenant %s; enable it, or ask for a dry run", t)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return refuse(runs.CodeUnavailable, "replica %s is shutting down; retry", s.Replica)
	}
	if id, ok := s.running[t]; ok {
		s.mu.Unlock()
		rep.ActiveRunID = id
		return refuse(runs.CodeBusy, "run %s of tenant %s is in progress", id, t)
	}
	s.mu.Unlock()
	lease, err := s.acquire(ctx, t)
	if err != nil {
		return refuse(runs.CodeUnavailable, "cannot take the tenant's lease: %v", err)
	}
	if lease == nil {
		if cp, err := s.Runs.Active(ctx, t); err == nil {
			rep.ActiveRunID = cp.Report.RunID
		}
		return refuse(runs.CodeBusy, "another replica is running tenant %s", t)
	}
	launched := false
	defer func() {
		if !launched {
			release(lease)
		}
	}()
	now := s.now()
	job := engine.Job{Tenant: t, Settings: st, Lease: lease, DryRun: req.DryRun, Link: link,
		Trigger: runs.Trigger{Kind: runs.TriggerManual, By: req.By}}
	if req.Full {
		job.Full = "a full scan was requested"
		if req.By != "" {
			job.Full += " by " + req.By
		}
	}
	cp, err := s.Runs.Active(lease.Context(), t)
	switch {
	case err == nil && cp.Report.DryRun:
		if err := s.abandon(lease.Context(), lease, cp); err != nil {
			return refuse(runs.CodeUnavailable, "dropping the interrupted dry run %s: %v", cp.Report.RunID, err)
		}
	case err == nil && req.DryRun:
		rep.ActiveRunID = cp.Report.RunID
		return refuse(runs.CodeBusy, "run %s of tenant %s is unfinished; a real run request resumes it", cp.Report.RunID, t)
	case err == nil:
		job.RunID, job.Trigger, job.Resume = cp.Report.RunID, cp.Report.Trigger, &cp
		rep.Resumed = true
	case !errors.Is(err, runs.ErrNotFound):
		return refuse(runs.CodeUnavailable, "reading the tenant's run state: %v", err)
	}
	if job.RunID == "" {
		job.RunID = runs.NewRunID(now)
	}
	if !s.launch(lease, job, false) {
		return refuse(runs.CodeUnavailable, "replica %s is shutting down; retry", s.Replica)
	}
	launched = true
	rep.Accepted, rep.RunID = true, job.RunID
	return rep
}

func (s *Service) handleControl(ctx context.Context, m *nats.Msg) {
	t := strings.TrimPrefix(m.Subject, s.Topology.ControlSubject(runs.ControlVerb, ""))
	var req runs.ControlRequest
	var rep runs.ControlReply
	if len(m.Data) > 0 && json.Unmarshal(m.Data, &req) != nil {
		rep = runs.ControlReply{Tenant: t, Code: runs.CodeBadRequest, Error: "request body is not a JSON ControlRequest", Replica: s.Replica}
	} else {
		link := trace.SpanContextFromContext(telemetry.Extract(context.Background(), m.Header))
		rep = s.Trigger(ctx, t, req, link)
	}
	s.Log.Info().Str("tenant", t).Bool("accepted", rep.Accepted).Str("run_id", rep.RunID).Str("code", rep.Code).
		Bool("dry_run", req.DryRun).Bool("full", req.Full).Str("by", req.By).Msg("reconcile control request")
	data, _ := json.Marshal(rep)
	if err := m.Respond(data); err != nil {
		s.Log.Warn().Err(err).Msg("replying to a control request failed")
	}
}
