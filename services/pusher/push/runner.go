package push

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/pusher/health"
	"github.com/optout-sync/optout-sync/services/pusher/queue"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// runner pushes one tenant: its loop takes batches of the tenant's dirty
// persons from its queue while the tenant's health allows, writes each with
// a worker slot of the replica, and gives each person back to the queue
// with the revision the batch left it clean at (which acks its held
// events). The intake feeds its queue; the sweep (sweep.go) re-finds what
// a queue lost.
type runner struct {
	svc    *Service
	tenant string
	log    zerolog.Logger
	health *health.Tenant
	// write writes one batch, recording in b where it left each person
	// clean (pushBatch; a fake in the loop's unit tests).
	write func(ctx context.Context, b *batch, work []workItem)
	// q is the tenant's work: each dirty person's key, with the hint of
	// its entry and the acks of its held events.
	q *queue.Queue[ledger.Snapshot]
	// arrivals is how the tenant's events reach the intake: a batch
	// lingers while more are coming.
	arrivals arrivals
	// resyncedAt is when the tenant's ledger was last resynced (unix ns).
	resyncedAt atomic.Int64
}

// run pushes the tenant's dirty persons while the tenant may (ingest needs
// only NATS, so the replica's puller folds its events whatever its
// health), and catches up with what the ledger already holds.
func (r *runner) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.catchUp(ctx) })
	stop := context.AfterFunc(ctx, r.q.Close)
	defer stop()
	r.dispatch(ctx)
	wg.Wait()
	// Every batch is over: what is still held is marked and acked, or,
	// where that fails, redelivered after AckWait.
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r.q.Due(final, true, r.marker())
}

func (s *Service) newRunner(t string) *runner {
	r := &runner{svc: s, tenant: t, log: s.Log.With().Str("tenant", t).Logger(), q: queue.New[ledger.Snapshot](queue.Config{
		HintLimit: hintLimit, HintFresh: hintFresh,
		Hold: holdFor(s.Topology.PusherAckWait), HoldLimit: max(1, s.Topology.PusherMaxAckPending/heldShare),
		OnTake: func(wait time.Duration) { s.Metrics.stage(StageQueue, targetOf(s.settings(t).TargetField()), wait) },
	})}
	r.health = health.New(t, health.Policy{
		Threshold: s.Cfg.BreakerThreshold, Cooldown: s.Cfg.BreakerCooldown, MaxCooldown: s.Cfg.BackoffMax,
		Recheck: s.Cfg.HealthRecheck, Reminder: s.Cfg.UnhealthyReminder,
	}, health.Deps{
		Now: s.Now, Log: r.log, Store: s.Health,
		Observe:    func(m tenant.Mode) { s.Metrics.tenantMode(t, m) },
		CheckSetup: func(ctx context.Context) error { return s.checkSetup(ctx, t) },
	})
	r.write = r.pushBatch
	return r
}

// hintLimit is the most hints a tenant's queue keeps: a few full batches.
// A backlog longer than that is read from the ledger as it is taken; in a
// burst, that read was a third of the push's ledger round trips.
const hintLimit = 2000

// hintFresh is how long a hint may be used: far longer than a healthy
// tenant's queue wait, far shorter than a retry's or a hold's. An Email Opt
// Out write is made before any compare-and-set (it needs no claim), so a
// person held back (an unhealthy tenant, a retry's wait) is read again, as
// its entry may have changed meanwhile in ways that make the write wrong
// (a newer clear learnt from Salesforce).
const hintFresh = 5 * time.Second

// One tenant's held events may take 1/heldShare of the shared consumer's
// unacknowledged window (MaxAckPending): a burst's tenant folding faster
// than it pushes holds up to that, and its events beyond are marked and
// acked at once, so a slow tenant cannot take the window from the others.
const heldShare = 4

// heldFor is how long an event is held before its person is marked dirty
// and it is acked: long enough for a healthy tenant's push (a linger and a
// Salesforce call), short against the consumer's AckWait (at most a
// quarter of it). An event held costs the dirty set nothing: a marker put
// before the ack and deleted after the confirmation were two of the eight
// messages the server stored per opt-out.
const heldFor = 2 * time.Second

// holdFor is the hold under the consumer's AckWait.
func holdFor(ackWait time.Duration) time.Duration {
	if ackWait > 0 {
		return min(heldFor, ackWait/4)
	}
	return heldFor
}

// dispatch takes batches of dirty persons while the tenant may push, and
// pushes each in a goroutine of its own, at most TenantConcurrency at
// once; it returns once the queue is closed and its batches are settled.
func (r *runner) dispatch(ctx context.Context) {
	s := r.svc
	busy := make(chan struct{}, max(1, s.Cfg.TenantConcurrency))
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for ctx.Err() == nil {
		if wait := r.health.HoldOff(ctx); wait > 0 {
			sleep(ctx, wait)
			continue
		}
		// A tenant slot before taking: while all of the tenant's batches are
		// in flight, the next one keeps filling in the queue.
		select {
		case busy <- struct{}{}:
		case <-ctx.Done():
			return
		}
		work := r.q.Take(s.Cfg.BatchSize, s.Cfg.Linger, r.arrivals.moreComing)
		if work == nil {
			<-busy
			return
		}
		inflight.Go(func() {
			defer func() { <-busy }()
			r.push(ctx, work)
		})
	}
}

// push writes one batch with a worker slot of the replica.
func (r *runner) push(ctx context.Context, work []workItem) {
	s := r.svc
	waited := time.Now()
	slot := false
	select {
	case s.slots <- struct{}{}:
		slot = true
	case <-ctx.Done():
	}
	s.Metrics.stage(StageSlot, targetOf(s.settings(r.tenant).TargetField()), time.Since(waited))
	// A batch in flight is finished even when shutdown starts, so what
	// Salesforce confirmed is recorded.
	b := &batch{clean: make(map[string]uint64, len(work))}
	r.write(context.WithoutCancel(ctx), b, work)
	if slot {
		<-s.slots
	}
	for _, w := range work {
		r.q.Done(w.Key, b.cleanAt(w.Key))
	}
}
