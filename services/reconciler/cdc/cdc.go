// Package cdc streams each tenant's Salesforce-side changes (Change Data
// Capture over the Pub/Sub API) into Sales Connect between nightly runs: one
// subscriber per tenant across replicas, under its own Redis lease.
//
// It is part of the reconciler, not a service of its own: what it does with
// a change is what a run does with it (engine.Apply: the diff, the conflict
// policy, the applied events, the ledger through the state machine, the
// write protocol), and where it cannot keep up (overflow, a lost replay id,
// a stall, the allocation spent) the run is its fallback. The lease is a
// separate one per tenant ("cdc-<tenant>"), so a nightly run and the
// stream never wait on each other; both write the ledger through the same
// compare-and-set state machine, which orders them.
//
// The replay id is stored in the runs bucket (runs.CDC) after each batch
// whose changes were all applied, under the lease's fence: a restart
// resumes after the last applied batch (nothing missed; a batch applied but
// not recorded comes again, and applying it again changes nothing). The
// same record says, for admins, whether the tenant streams, is stalled or
// has fallen back to the nightly run, and why.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/pubsub"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/flow/dupes"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/lock"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Settings is the live view of tenant settings (*tenant.Cache).
type Settings interface {
	Get(tenant string) tenant.Settings
	Tenants() []string
}

// Clients hands out tenants' Salesforce clients (*sfcreds.Pool).
type Clients interface {
	Get(ctx context.Context, tenant string) (sfcreds.Client, error)
}

// Config tunes the subscribers.
type Config struct {
	// PubSub is where the Pub/Sub API is (default Salesforce's global
	// endpoint).
	PubSub pubsub.Config
	// Watchdog ends a stream that sent nothing (no event, no keepalive) for
	// this long (spec §9.10: about 300 s; keepalives come within 270 s).
	Watchdog time.Duration
	// Retry is how long a tenant in fallback waits before trying again
	// (CDC enabled since? allocation back?).
	Retry time.Duration
	// Backoff is the first wait after a transient failure (doubling, up
	// to Retry).
	Backoff time.Duration
	// Allocation is the org's delivered-event allocation per 24 h when
	// GET /limits does not say (Enterprise: 25,000).
	Allocation int64
	// Tick is how often tenants to subscribe are looked for.
	Tick time.Duration
}

// DefaultConfig is the production tuning.
func DefaultConfig() Config {
	return Config{Watchdog: 5 * time.Minute, Retry: 15 * time.Minute, Backoff: 2 * time.Second,
		Allocation: 25_000, Tick: 30 * time.Second}
}

// LeaseName is the tenant's CDC lease (and fence counter) in Redis: not the
// nightly run's.
func LeaseName(tenantID string) string { return "cdc-" + tenantID }

// Subscriber runs the streams of the tenants whose lease this replica holds.
type Subscriber struct {
	Cfg      Config
	Engine   *engine.Engine
	Locker   *lock.Locker
	Runs     runs.Store
	Settings Settings
	Clients  Clients
	// NC and Topology send reconcile requests (runs.Request) to whichever
	// replica answers.
	NC       *nats.Conn
	Topology natsx.Topology
	Replica  string
	Log      zerolog.Logger
	Metrics  *Metrics
	Now      func() time.Time

	mu     sync.Mutex
	active map[string]context.CancelFunc
	wg     sync.WaitGroup
}

func (s *Subscriber) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Wanted reports whether a tenant streams: sync on and CDC enabled.
func Wanted(st tenant.Settings) bool { return st.SyncEnabled && st.CDCEnabled }

// Run subscribes the wanted tenants whose lease it can take, every Tick,
// until ctx ends and every stream has stopped.
func (s *Subscriber) Run(ctx context.Context) error {
	if s.Cfg.Tick <= 0 {
		s.Cfg.Tick = DefaultConfig().Tick
	}
	s.mu.Lock()
	s.active = map[string]context.CancelFunc{}
	s.mu.Unlock()
	defer s.wg.Wait()
	for {
		s.pass(ctx)
		// Jitter spreads tenants across replicas that started together.
		t := time.NewTimer(s.Cfg.Tick + rand.N(s.Cfg.Tick/4+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// pass starts the streams of wanted tenants not streaming here and stops
// those no longer wanted.
func (s *Subscriber) pass(ctx context.Context) {
	tenants := s.Settings.Tenants()
	rand.Shuffle(len(tenants), func(i, j int) { tenants[i], tenants[j] = tenants[j], tenants[i] })
	for _, t := range tenants {
		want := Wanted(s.Settings.Get(t))
		s.mu.Lock()
		cancel, running := s.active[t]
		s.mu.Unlock()
		switch {
		case running && !want:
			cancel()
		case !running && want && ctx.Err() == nil:
			s.start(ctx, t)
		}
	}
}

func (s *Subscriber) start(ctx context.Context, t string) {
	log := logx.WithTenant(s.Log, t)
	floor := uint64(0)
	if c, err := s.Runs.CDC(ctx, t); err == nil {
		floor = c.Fence // a Redis that lost its counter still fences above the record
	}
	lease, err := s.Locker.TryAcquire(ctx, LeaseName(t), lock.MinFence(floor))
	if errors.Is(err, lock.ErrNotAcquired) {
		return
	}
	if err != nil {
		log.Warn().Err(err).Msg("CDC lease unavailable")
		return
	}
	sctx, cancel := context.WithCancel(lease.Context())
	s.mu.Lock()
	s.active[t] = cancel
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			cancel()
			rctx, rc := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = lease.Release(rctx)
			rc()
			s.mu.Lock()
			delete(s.active, t)
			s.mu.Unlock()
		}()
		st := &stream{s: s, tenant: t, lease: lease, fence: lease.Fence(),
			log: log.With().Uint64("cdc_fence", lease.Fence()).Logger()}
		st.run(sctx)
	}()
}

// stream is one tenant's subscriber while this replica holds its lease.
type stream struct {
	s      *Subscriber
	tenant string
	lease  *lock.Lease
	fence  uint64
	log    zerolog.Logger
	sf     *salesforce.Client // the session's

	failures int
}

// check is the fence check before what the ledger cannot fence.
func (st *stream) check(ctx context.Context) error {
	if !st.lease.Valid() {
		return ledger.ErrLeaseExpired
	}
	return st.s.Runs.CheckCDCFence(ctx, st.tenant, st.fence)
}

// record changes the tenant's CDC record under the lease's fence.
func (st *stream) record(ctx context.Context, fn func(c *runs.CDC)) (runs.CDC, error) {
	return st.s.Runs.UpdateCDC(ctx, st.tenant, st.fence, func(c *runs.CDC) bool {
		c.Holder = st.s.Replica
		fn(c)
		return true
	})
}

// setState records a state change with its admin-readable reason (the
// Since stamp moves only when the state does) and the stalled gauge.
func (st *stream) setState(ctx context.Context, state runs.CDCState, reason string, until time.Time) {
	now := st.s.now()
	st.s.Metrics.stall(ctx, st.tenant, state != runs.CDCStreaming)
	_, err := st.record(ctx, func(c *runs.CDC) {
		if c.State != state {
			c.Since = now
		}
		c.State, c.Reason, c.Until = state, reason, until
	})
	if err != nil && ctx.Err() == nil {
		st.log.Warn().Err(err).Msg("recording the CDC state failed")
	}
	ev := st.log.Info()
	if state != runs.CDCStreaming {
		ev = st.log.Warn()
	}
	ev.Str("cdc_state", string(state)).Str("reason", reason).Msg("CDC stream state")
}

func (st *stream) run(ctx context.Context) {
	st.log.Info().Msg("CDC subscriber started (lease taken)")
	for ctx.Err() == nil {
		wait := st.session(ctx)
		if wait <= 0 || ctx.Err() != nil {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	if !Wanted(st.s.Settings.Get(st.tenant)) && st.lease.Valid() {
		// Turned off: say so, rather than leave "streaming" on the record.
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		st.setState(octx, runs.CDCFallback, "Change Data Capture is off in the tenant's settings (cdcEnabled, or sync off); the nightly run keeps Salesforce-side changes in step", time.Time{})
		cancel()
	}
	st.log.Info().Err(context.Cause(ctx)).Msg("CDC subscriber stopped")
}

// backoff is the wait after a transient failure.
func (st *stream) backoff() time.Duration {
	st.failures++
	d := st.s.Cfg.Backoff << min(st.failures-1, 8)
	return min(d, max(st.s.Cfg.Retry, st.s.Cfg.Backoff))
}

// fallback records that the nightly run carries the tenant, and why, and
// returns the wait before the next attempt.
func (st *stream) fallback(ctx context.Context, reason string) time.Duration {
	wait := st.s.Cfg.Retry
	st.setState(ctx, runs.CDCFallback, reason+"; the nightly run keeps Salesforce-side changes in step meanwhile", st.s.now().Add(wait))
	return wait
}

// session subscribes once and streams until the stream ends; it returns
// how long to wait before the next session.
func (st *stream) session(ctx context.Context) time.Duration {
	s := st.s
	settings := s.Settings.Get(st.tenant)
	if !Wanted(settings) {
		return s.Cfg.Tick
	}
	field := settings.TargetField()
	cur, err := s.Runs.CDC(ctx, st.tenant)
	if err != nil && !errors.Is(err, runs.ErrNotFound) {
		st.log.Warn().Err(err).Msg("reading the CDC record failed")
		return st.backoff()
	}
	client, err := s.Clients.Get(ctx, st.tenant)
	if err != nil {
		return st.fallback(ctx, "no usable Salesforce credentials: "+err.Error())
	}
	sf, ok := client.(*salesforce.Client)
	if !ok {
		return st.fallback(ctx, "the tenant's Salesforce client cannot open a Pub/Sub stream")
	}
	st.sf = sf
	pc, err := pubsub.New(sf, s.Cfg.PubSub)
	if err != nil {
		return st.fallback(ctx, "the Pub/Sub endpoint is refused: "+err.Error())
	}
	defer func() { _ = pc.Close() }()
	topic := settings.Topic()
	info, err := pc.GetTopic(ctx, topic)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		switch salesforce.ClassOf(err) {
		case salesforce.PermanentTenant:
			return st.fallback(ctx, fmt.Sprintf("Change Data Capture is not enabled for this org on %s (select Contact and Lead in Setup › Change Data Capture, or fix the channel): %v", topic, err))
		case salesforce.Auth:
			return st.fallback(ctx, "Salesforce refused the integration user's session for the Pub/Sub API: "+err.Error())
		}
		st.setState(ctx, runs.CDCStalled, "the Pub/Sub API cannot be reached: "+err.Error(), time.Time{})
		return st.backoff()
	}
	if !info.CanSubscribe {
		return st.fallback(ctx, "the integration user may not subscribe to "+topic+" (Change Data Capture permission)")
	}
	ratio, alloc, spent := st.allocation(ctx, sf, &cur)
	s.Metrics.used(ctx, st.tenant, ratio)
	if spent {
		_, _ = st.record(ctx, func(c *runs.CDC) { c.UsedRatio, c.Allocation = ratio, alloc })
		return st.fallback(ctx, fmt.Sprintf("the org's delivered-event allocation (%d a day) is spent; the stream resumes from its stored position when it has room again", alloc))
	}
	opts := pubsub.SubscribeOptions{Topic: topic, Watchdog: s.Cfg.Watchdog,
		Fields: append(slices.Clone(pubsub.DefaultFields), field)}
	if len(cur.ReplayID) > 0 {
		opts.Replay, opts.ReplayID = pubsub.Custom, cur.ReplayID
	} else {
		opts.Replay = pubsub.Latest // the first stream: what came before is the nightly run's
	}
	sub, err := pc.Subscribe(ctx, opts)
	if err != nil {
		return st.fallback(ctx, "cannot subscribe: "+err.Error())
	}
	defer sub.Close()
	if _, err := st.record(ctx, func(c *runs.CDC) { c.Topic, c.Allocation, c.UsedRatio = topic, alloc, ratio }); err != nil {
		st.log.Warn().Err(err).Msg("recording the CDC topic failed")
		return st.backoff()
	}
	stalled := cur.State == runs.CDCStalled
	for {
		b, err := sub.Next()
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			return st.failed(ctx, err, &stalled)
		}
		st.failures = 0
		if stalled || cur.State != runs.CDCStreaming {
			st.setState(ctx, runs.CDCStreaming, "", time.Time{})
			stalled, cur.State = false, runs.CDCStreaming
		}
		done, err := st.batch(ctx, b, settings, field, sf.CallClient(), alloc)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			// Not recorded: the next session resumes before this batch.
			st.setState(ctx, runs.CDCStalled, "applying a batch of changes failed, retrying from the last applied position: "+err.Error(), time.Time{})
			return st.backoff()
		}
		if done > 0 {
			return done
		}
	}
}

// failed handles the end of a stream; it returns the wait before the next
// session.
func (st *stream) failed(ctx context.Context, err error, stalled *bool) time.Duration {
	var se *salesforce.Error
	errors.As(err, &se)
	switch {
	case se != nil && se.Code == pubsub.CodeStalled:
		if !*stalled {
			*stalled = true
			reason := fmt.Sprintf("the stream sent nothing (no event, no keepalive) for %s: resubscribing from the stored position", st.s.Cfg.Watchdog)
			st.setState(ctx, runs.CDCStalled, reason, time.Time{})
			st.reconcile(ctx, "stall", reason)
		}
		return 0
	case salesforce.ClassOf(err) == salesforce.ReplayLost:
		reason := "Salesforce refused the stored replay id (expired after 72 h or corrupted): resubscribed from the newest event; changes in between are left to the requested reconcile"
		// Never silently from the tip alone (spec §9.4): the reconcile is
		// asked for first, then the position is dropped.
		st.reconcile(ctx, "replay-lost", reason)
		if _, rerr := st.record(ctx, func(c *runs.CDC) { c.ReplayID = nil }); rerr != nil {
			return st.backoff()
		}
		st.setState(ctx, runs.CDCStalled, reason, time.Time{})
		return 0
	case salesforce.ClassOf(err) == salesforce.Quota:
		alloc := int64(0)
		if lim, lerr := st.sf.Limits(ctx); lerr == nil {
			alloc = lim["DailyDeliveredPlatformEvents"].Max // the org's, which may have changed since the stream began
		}
		_, _ = st.record(ctx, func(c *runs.CDC) {
			c.UsedRatio = 1
			if alloc > 0 {
				c.Allocation = alloc
			}
		})
		st.s.Metrics.used(ctx, st.tenant, 1)
		return st.fallback(ctx, "the org's delivered-event allocation is spent (Salesforce: "+err.Error()+"); the stream resumes from its stored position when it has room again")
	case salesforce.ClassOf(err) == salesforce.PermanentTenant || salesforce.ClassOf(err) == salesforce.Auth:
		return st.fallback(ctx, "the stream was refused: "+err.Error())
	}
	if !*stalled {
		*stalled = true
		st.setState(ctx, runs.CDCStalled, "the stream failed, resubscribing from the stored position: "+err.Error(), time.Time{})
	}
	return st.backoff()
}

// allocation is the share of the org's delivered-event allocation used:
// the org's own count (GET /limits DailyDeliveredPlatformEvents, shared by
// every subscriber of the org) when it answers, else this tenant's count
// against the configured allocation.
func (st *stream) allocation(ctx context.Context, sf sfcreds.Client, cur *runs.CDC) (ratio float64, alloc int64, spent bool) {
	alloc = st.s.Cfg.Allocation
	used := cur.Delivered24h(st.s.now())
	if lim, err := sf.Limits(ctx); err == nil {
		if l, ok := lim["DailyDeliveredPlatformEvents"]; ok && l.Max > 0 {
			alloc, used = l.Max, max(l.Max-l.Remaining, used)
		}
	}
	if alloc <= 0 {
		return 0, alloc, false
	}
	ratio = min(float64(used)/float64(alloc), 1)
	return ratio, alloc, used >= alloc
}

// batch applies one response and records its position. It returns a wait
// (> 0) when the stream must stop (the allocation spent by our count).
func (st *stream) batch(ctx context.Context, b *pubsub.Batch, settings tenant.Settings, field, ours string, alloc int64) (time.Duration, error) {
	s := st.s
	s.Metrics.delivered(ctx, st.tenant, len(b.Events))
	var changes []engine.Change
	var reread []string
	var reconcile []string
	var created []dupes.Record
	own := 0
	for i := range b.Events {
		ev := &b.Events[i]
		if ev.Err != nil {
			reconcile = append(reconcile, "an event could not be decoded ("+ev.Err.Error()+")")
			continue
		}
		h := ev.Header
		if h.EntityName != "Contact" && h.EntityName != "Lead" {
			continue
		}
		if h.FromClient(ours) {
			own++ // our own write coming back: already in the ledger
			continue
		}
		switch {
		case h.ChangeType == pubsub.ChangeGapOverflow:
			reconcile = append(reconcile, "Salesforce sent GAP_OVERFLOW for "+h.EntityName+" (a transaction changed more records than CDC carries)")
		case h.IsGap():
			for _, id := range h.RecordIDs {
				if strings.HasSuffix(id, "*") {
					reconcile = append(reconcile, "Salesforce sent a gap event for every "+h.EntityName+" ("+id+")")
					continue
				}
				reread = append(reread, id)
			}
		case h.ChangeType == pubsub.ChangeCreate || h.ChangeType == pubsub.ChangeUpdate || h.ChangeType == pubsub.ChangeUndelete:
			if settings.DuplicatesByEmail {
				// A record of an address already opted out (a list import, a
				// web form) is its duplicate: its address, known only while
				// this event is processed, is looked up now.
				if addr, ok := ev.String("Email"); ok && addr != "" && (h.ChangeType != pubsub.ChangeUpdate || ev.Changed("Email")) {
					for _, id := range h.RecordIDs {
						if !strings.HasSuffix(id, "*") {
							created = append(created, dupes.Record{ID: id, Type: h.EntityName, Email: addr})
						}
					}
				}
			}
			v, has := ev.Bool(field)
			changed := ev.Changed(field) || ev.Nulled(field) || (h.ChangeType != pubsub.ChangeUpdate && has)
			if !changed {
				continue
			}
			for _, id := range h.RecordIDs {
				if strings.HasSuffix(id, "*") {
					reconcile = append(reconcile, "Salesforce sent a change for every "+h.EntityName+" ("+id+")")
					continue
				}
				changes = append(changes, engine.Change{ID: id, Value: v, At: h.CommitTimestamp})
			}
		}
	}
	var applied int64
	var guard string
	if len(changes)+len(reread)+len(created) > 0 {
		res, err := s.Engine.Apply(ctx, engine.Changes{Tenant: st.tenant, Settings: settings, Lease: st.lease,
			Check: st.check, Records: changes, Reread: reread, New: created})
		switch c := salesforce.ClassOf(err); {
		case errors.Is(err, engine.ErrGuard):
			guard = "a batch would apply many Salesforce-side resubscribes (" + err.Error() + "); left to the reconcile and its guard"
		case err != nil && ctx.Err() == nil && !fenced(err) && (c == salesforce.PermanentTenant || c == salesforce.PermanentRecord || c == salesforce.Auth || c == salesforce.Quota):
			// Retrying the batch cannot help (the field read-only, the
			// allowance spent): the stream goes on and the run, which
			// reports such failures to admins, takes these records.
			guard = "applying a batch failed (" + err.Error() + "); left to the reconcile"
		case err != nil:
			return 0, err
		}
		applied = res.Writes.LedgerWritten + res.Writes.SalesforceWritten
	}
	if guard != "" {
		reconcile = append(reconcile, guard)
	}
	if len(reconcile) > 0 {
		st.reconcile(ctx, "events", strings.Join(reconcile, "; "))
	}
	now := s.now()
	rec, err := st.record(ctx, func(c *runs.CDC) {
		if len(b.LatestReplayID) > 0 {
			c.ReplayID = b.LatestReplayID
		}
		c.CountDelivered(now, int64(len(b.Events)))
		c.Applied += applied
		if len(b.Events) > 0 {
			c.LastAt = now
		}
		if c.Allocation > 0 {
			c.UsedRatio = max(c.UsedRatio, min(float64(c.Delivered24h(now))/float64(c.Allocation), 1))
		}
	})
	if err != nil {
		return 0, fmt.Errorf("record the stream's position: %w", err)
	}
	s.Metrics.appliedN(ctx, st.tenant, applied)
	s.Metrics.used(ctx, st.tenant, rec.UsedRatio)
	if len(b.Events) > 0 {
		st.log.Debug().Int("events", len(b.Events)).Int("own", own).Int("changes", len(changes)).Int("reread", len(reread)).
			Int64("applied", applied).Msg("CDC batch applied")
	}
	if alloc > 0 && rec.Delivered24h(now) >= alloc {
		return st.fallback(ctx, fmt.Sprintf("this tenant's stream delivered %d events in 24 h, the org's whole allocation (%d); the stream resumes from its stored position when it has room again", rec.Delivered24h(now), alloc)), nil
	}
	return 0, nil
}

// fenced reports a lost lease: nothing more may be written.
func fenced(err error) bool {
	return errors.Is(err, ledger.ErrLeaseExpired) || errors.Is(err, ledger.ErrFenced) || errors.Is(err, runs.ErrFenced)
}

// reconcile asks the reconciler (any replica) for a run of the tenant and
// records the request and its answer where admins read them.
func (st *stream) reconcile(ctx context.Context, code, reason string) {
	s := st.s
	rq := &runs.CDCReconcile{At: s.now(), Reason: reason}
	if s.NC == nil {
		rq.Refused = "no reconciler to ask"
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := runs.Request(rctx, s.NC, s.Topology, st.tenant, reconcileRequest(code))
		cancel()
		switch {
		case err != nil:
			rq.Refused = "the request was not answered: " + err.Error()
		case !rep.Accepted && rep.Code == runs.CodeBusy:
			rq.RunID, rq.Refused = rep.ActiveRunID, "a run of the tenant is in progress"
		case !rep.Accepted:
			rq.Refused = rep.Code + ": " + rep.Error
		default:
			rq.RunID = rep.RunID
		}
	}
	if _, err := st.record(ctx, func(c *runs.CDC) { c.Reconcile = rq }); err != nil && ctx.Err() == nil {
		st.log.Warn().Err(err).Msg("recording the reconcile request failed")
	}
	st.log.Warn().Str("reason", reason).Str("run_id", rq.RunID).Str("refused", rq.Refused).Msg("CDC asked for a reconcile")
}

// reconcileRequest is the run the subscriber asks for: a full scan when
// changes were lost and nobody knows which or since when (an overflow or
// an undecodable event names no records, a lost position skips an unknown
// stretch), as only a full scan assumes nothing about when they changed;
// the run after a stall is the default kind (the stored position resumes
// the stream, nothing was skipped).
func reconcileRequest(code string) runs.ControlRequest {
	return runs.ControlRequest{By: "cdc:" + code, Full: code == "events" || code == "replay-lost"}
}

// Streaming reports whether this replica holds the tenant's lease and runs
// its stream.
func (s *Subscriber) Streaming(tenantID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.active[tenantID]
	return ok
}
