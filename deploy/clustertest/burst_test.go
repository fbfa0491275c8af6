package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/optout-sync/optout-sync/internal/harness"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// startPusher runs services/pusher as its own process, configured as in
// production but for shorter waits; a kill -9 of it is a real crash.
func (cl *cluster) startPusher(name string) *proc {
	cl.t.Helper()
	adminPort := freePort(cl.t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"NATS_URL=" + cl.nats.urls(),
		fmt.Sprintf("OPTOUT_ADMIN_ADDR=127.0.0.1:%d", adminPort),
		"OPTOUT_EMAIL_HASH_KEY=cluster-test-email-hash-key-0123456789",
		// Retries and sweeps in hundreds of milliseconds rather than
		// seconds and minutes, so the drain after the faults takes seconds;
		// the full-ledger resync keeps its production hour, so the test
		// shows the drain does not depend on it.
		"OPTOUT_BACKOFF_INITIAL=100ms",
		"OPTOUT_BACKOFF_MAX=2s",
		"OPTOUT_BREAKER_COOLDOWN=200ms",
		"OPTOUT_HEALTH_RECHECK=1s",
		"OPTOUT_DISCOVERY_INTERVAL=200ms",
		"OPTOUT_SWEEP_INTERVAL=1s",
	}
	for k, v := range cl.env {
		env = append(env, k+"="+v)
	}
	p := cl.ps.add(name, cl.pusherBin, filepath.Join(cl.dir, name+".log"), env)
	if err := p.Start(); err != nil {
		cl.t.Fatal(err)
	}
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort)
	if err := poll(cl.ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		if !p.Running() {
			return errors.New(name + " exited")
		}
		return harness.HTTPOK(ctx, ready)
	}); err != nil {
		cl.t.Fatalf("%s ready: %v", name, err)
	}
	return p
}

// publishRate paces the burst so that it lasts long enough for the faults
// to land inside it (about 30 s for 20,000 events); the pushers fall behind
// it anyway, so they are busy throughout.
const publishRate = 700 // messages a second

// burst publishes every message of b (retrying each until JetStream
// acknowledges it, under its Nats-Msg-Id so a retry of a stored message is
// dropped) while a chaos goroutine kill -9s the events stream's leader, then
// the ledger bucket's, and then one pusher. It returns what the chaos did.
func (cl *cluster) burst(b burst) []string {
	t := cl.t
	pub := natsx.Publisher{JS: cl.js, Topology: cl.topo}
	var sent, retries atomic.Int64
	total := int64(len(b.pubs))
	work := make(chan publication)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 32 {
		wg.Go(func() {
			for p := range work {
				if err := cl.publish(pub, p, &retries); err != nil {
					errs <- err
					return
				}
				sent.Add(1)
			}
		})
	}

	var chaos []string
	var chaosErr error
	chaosDone := make(chan struct{})
	chaosCtx, stopChaos := context.WithCancel(cl.ctx)
	defer func() { stopChaos(); <-chaosDone }() // never outlives the test
	go func() {
		defer close(chaosDone)
		chaos, chaosErr = cl.chaos(chaosCtx, func() int64 { return sent.Load() }, total)
	}()

	tick := time.NewTicker(time.Second / publishRate * 10)
	defer tick.Stop()
	func() {
		defer close(work)
		for i, p := range b.pubs {
			if i%10 == 0 {
				select {
				case <-tick.C:
				case <-cl.ctx.Done():
					return
				}
			}
			select {
			case work <- p:
			case err := <-errs:
				t.Errorf("publish: %v", err)
				return
			case <-cl.ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("publish: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("published %d messages by +%s (%d retried after a failed attempt)", sent.Load(), cl.since(), retries.Load())
	select {
	case <-chaosDone:
	case <-time.After(5 * time.Minute):
		t.Fatal("the chaos steps did not finish")
	}
	if chaosErr != nil {
		t.Fatalf("chaos: %v", chaosErr)
	}
	return chaos
}

// publish sends one message until JetStream acknowledges it: a publish cut
// by a leader's death may or may not have been stored, and the retry under
// the same Nats-Msg-Id is dropped if it was.
func (cl *cluster) publish(pub natsx.Publisher, p publication, retries *atomic.Int64) error {
	data, ctype, err := event.Encode(p.ev, p.asJSON)
	if err != nil {
		return fmt.Errorf("encode %s: %w", p.ev.GetEventId(), err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; ; attempt++ {
		m := nats.NewMsg(cl.topo.EventsSubject(p.ev.GetTenantId()))
		m.Data = data
		m.Header.Set(event.HeaderContentType, ctype)
		ctx, cancel := context.WithTimeout(cl.ctx, 5*time.Second)
		_, err := pub.Publish(ctx, m, p.msgID)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || cl.ctx.Err() != nil {
			return fmt.Errorf("event %s (msg id %s) after %d attempts: %w", p.ev.GetEventId(), p.msgID, attempt+1, err)
		}
		retries.Add(1)
		time.Sleep(time.Duration(min(attempt+1, 10)) * 100 * time.Millisecond)
	}
}

// chaos kills, at fixed shares of the burst: the leader of the events
// stream (then restarts it on the same store), the leader of the ledger
// bucket (likewise) and one pusher replica (for good).
func (cl *cluster) chaos(ctx context.Context, sent func() int64, total int64) ([]string, error) {
	var done []string
	waitFor := func(share float64) error {
		return poll(ctx, 5*time.Minute, 20*time.Millisecond, func(ctx context.Context) error {
			if float64(sent()) >= share*float64(total) {
				return nil
			}
			return errors.New("waiting for the burst")
		})
	}
	for _, step := range []struct {
		share  float64
		stream string
	}{{0.2, cl.topo.EventsStream()}, {0.45, "KV_" + cl.topo.LedgerBucket()}} {
		if err := waitFor(step.share); err != nil {
			return done, err
		}
		note, err := cl.killLeader(ctx, step.stream, fmt.Sprintf("%.0f%% published", 100*float64(sent())/float64(total)))
		if err != nil {
			return done, err
		}
		done = append(done, note)
	}
	if err := waitFor(0.65); err != nil {
		return done, err
	}
	// Kill mid-write: once sales-field writes are in flight (their claims
	// are in the ledger), so the survivor has persons to take over.
	_ = poll(ctx, 20*time.Second, 10*time.Millisecond, func(ctx context.Context) error {
		if len(cl.claims(ctx)) == 0 {
			return errors.New("no write in flight")
		}
		return nil
	})
	work := cl.pending()
	cl.pushers[0].Kill()
	cl.killedAt = time.Now()
	cl.claimedAtKill = cl.claims(ctx)
	done = append(done, fmt.Sprintf("kill -9 %s at %.0f%% published (%s; %d persons under a claim)", cl.pushers[0].Name, 100*float64(sent())/float64(total), work, len(cl.claimedAtKill)))
	cl.t.Logf("chaos at +%s: %s", cl.since(), done[len(done)-1])
	return done, nil
}

// claims are the sales-field writes in flight at the kill, by ledger key:
// the killed replica's among them.
func (cl *cluster) claims(ctx context.Context) map[string]optout.Claim {
	out := map[string]optout.Claim{}
	now := time.Now()
	for _, tn := range tenants {
		err := cl.lg.Scan(ctx, tn.name, func(it ledger.ScanItem) error {
			if c := it.Entry.Writing; c != nil && c.ID != "" && now.Before(c.Until) {
				out[it.Key] = *c
			}
			return nil
		}, nil)
		if err != nil {
			cl.t.Errorf("scan the claims of %s: %v", tn.name, err)
		}
	}
	return out
}

// failover says how the persons under a claim at the kill were written:
// every one must be confirmed before its claim ended, the killed replica's
// taken over by the survivor (a writer of the same value need not wait for
// the claim), and how long after the kill the last was.
func (cl *cluster) failover(ctx context.Context) string {
	last, late, lateOther := time.Duration(0), 0, 0
	for key, c := range cl.claimedAtKill {
		it, err := cl.lg.Get(ctx, key)
		if err != nil {
			cl.t.Errorf("person %s claimed at the kill: %v", key, err)
			continue
		}
		e := it.Entry
		if e.Confirmed == nil || e.ConfirmedAt.IsZero() {
			continue // a newer wish took it elsewhere; verify judges the outcome
		}
		if c.Value == *e.Confirmed && !e.ConfirmedAt.Before(c.Until) {
			cl.t.Errorf("person %s: %s=%t confirmed at %s, after the claim held at the kill ended (%s): not taken over", key, e.Field, *e.Confirmed, e.ConfirmedAt.Format(time.RFC3339Nano), c.Until.Format(time.RFC3339Nano))
		}
		d := e.ConfirmedAt.Sub(cl.killedAt)
		last = max(last, d)
		if d > 30*time.Second {
			late++
			if c.Value != *e.Confirmed {
				lateOther++ // the other value waits for the whole claim, by design
			}
		}
	}
	return fmt.Sprintf("%d persons under a claim at the kill, the last confirmed %s after it; %d later than 30 s, %d of them writing the other value than the claim (which waits for the claim, %s); a writer of the same value takes over after %s, once the killed replica's events come back (the consumer's AckWait)",
		len(cl.claimedAtKill), last.Round(time.Millisecond), late, lateOther, optout.DefaultClaimTTL, optout.DefaultClaimTakeover)
}

// killLeader kill -9s the server leading stream, waits for another leader,
// restarts the server on its store and waits until it has caught up.
func (cl *cluster) killLeader(ctx context.Context, stream, when string) (string, error) {
	var leader string
	if err := poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		var err error
		leader, err = leaderOf(ctx, cl.js, stream)
		return err
	}); err != nil {
		return "", err
	}
	n := cl.nats.node(leader)
	if n == nil {
		return "", fmt.Errorf("leader %q of %s is none of the test's servers", leader, stream)
	}
	work := cl.pending()
	killed := time.Now()
	n.Kill()
	var next string
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		l, err := leaderOf(ctx, cl.js, stream)
		if err != nil {
			return err
		}
		if l == leader {
			return fmt.Errorf("%s still led by the killed %s", stream, leader)
		}
		next = l
		return nil
	}); err != nil {
		return "", err
	}
	elected := time.Since(killed)
	if err := n.Start(); err != nil {
		return "", err
	}
	if err := n.waitHealthy(ctx, 2*time.Minute); err != nil {
		return "", err
	}
	note := fmt.Sprintf("kill -9 %s (leader of %s) at %s (%s): %s led after %s, %s back and current after %s",
		leader, stream, when, work, next, elected.Round(time.Millisecond), leader, time.Since(killed).Round(time.Millisecond))
	cl.t.Logf("chaos at +%s: %s", cl.since(), note)
	return note, nil
}

// since is the time since the burst began, for progress lines.
func (cl *cluster) since() time.Duration { return time.Since(cl.began).Round(100 * time.Millisecond) }

// pending describes the work the pushers still have: events not yet
// folded and persons not yet written.
func (cl *cluster) pending() string {
	var parts []string
	for _, tn := range tenants {
		undelivered, acks, dirty, err := cl.work(tn.name)
		if err != nil {
			parts = append(parts, tn.name+": "+err.Error())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d undelivered, %d unacked, %d dirty", tn.name, undelivered, acks, dirty))
	}
	return strings.Join(parts, ", ")
}

// work is one tenant's outstanding work: its backlog on the pushers'
// shared consumer (as optoutctl shows it) and its dirty persons.
func (cl *cluster) work(tenantID string) (undelivered uint64, ackPending int, dirty int, err error) {
	ctx, cancel := context.WithTimeout(cl.ctx, 10*time.Second)
	defer cancel()
	b, err := eventstream.TenantBacklog(ctx, cl.js, cl.topo, tenantID)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("backlog of %s: %w", tenantID, err)
	}
	if !b.ConsumerExists {
		return 0, 0, 0, fmt.Errorf("backlog of %s: no pusher consumer yet", tenantID)
	}
	if err := cl.lg.Dirty(ctx, tenantID, func(ledger.DirtyItem) { dirty++ }); err != nil {
		return 0, 0, 0, fmt.Errorf("dirty set of %s: %w", tenantID, err)
	}
	return b.Waiting, b.InFlight, dirty, nil
}

// drainedNow is nil when every event is folded into the ledger (none
// undelivered or unacked) and no person is dirty.
func (cl *cluster) drainedNow() error {
	for _, tn := range tenants {
		u, a, d, err := cl.work(tn.name)
		if err != nil {
			return err
		}
		if u != 0 || a != 0 || d != 0 {
			return fmt.Errorf("%s: %d undelivered, %d unacked, %d dirty", tn.name, u, a, d)
		}
	}
	return nil
}

// waitDrained polls until the work is done, three times in a row a second
// apart (a batch in flight can make a person dirty again). It reports false
// (after describing what is left) when the work is not done in time.
func (cl *cluster) waitDrained(within time.Duration) bool {
	cl.t.Helper()
	streak := 0
	lastLog := time.Now()
	if err := poll(cl.ctx, within, time.Second, func(context.Context) error {
		err := cl.drainedNow()
		if err != nil {
			streak = 0
			if time.Since(lastLog) > 15*time.Second {
				cl.t.Logf("draining at +%s: %v", cl.since(), err)
				lastLog = time.Now()
			}
			return err
		}
		if streak++; streak < 3 {
			return errors.New("drained, confirming")
		}
		return nil
	}); err != nil {
		cl.t.Errorf("not drained: %v\n%s", err, cl.describeDirty())
		return false
	}
	return true
}

// describeDirty lists the persons still in the dirty set, with their
// entries, for a failure report.
func (cl *cluster) describeDirty() string {
	ctx, cancel := context.WithTimeout(cl.ctx, 30*time.Second)
	defer cancel()
	var lines []string
	for _, tn := range tenants {
		field := cl.field[tn.name]
		var items []ledger.DirtyItem
		if err := cl.lg.Dirty(ctx, tn.name, func(d ledger.DirtyItem) { items = append(items, d) }); err != nil {
			lines = append(lines, fmt.Sprintf("%s: dirty set: %v", tn.name, err))
			continue
		}
		for i, d := range items {
			if i == 20 {
				lines = append(lines, fmt.Sprintf("%s: … %d more", tn.name, len(items)-i))
				break
			}
			it, err := cl.lg.Get(ctx, d.Key)
			e, rev := it.Entry, it.Rev
			line := fmt.Sprintf("dirty %s (next attempt %s): ", d.Key, d.NextAttempt.Format(time.RFC3339Nano))
			if err != nil {
				lines = append(lines, line+err.Error())
				continue
			}
			line += fmt.Sprintf("rev %d v%d state %s merged into %q dirty %t retry %+v reason %q", rev, e.Version, e.State, e.MergedInto, e.Dirty(field), e.Retry, e.Reason)
			if e.MergedInto != "" {
				if p, err := cl.lg.Get(ctx, d.Key, ledger.FollowMerges()); err == nil {
					line += fmt.Sprintf("; person %s rev %d state %s dirty %t", p.Key, p.Rev, p.Entry.State, p.Entry.Dirty(field))
				}
			}
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// waitAuditCaughtUp waits until the audit stream has sourced every ledger
// write.
func (cl *cluster) waitAuditCaughtUp(within time.Duration) {
	cl.t.Helper()
	ctx := cl.ctx
	if err := poll(ctx, within, 200*time.Millisecond, func(ctx context.Context) error {
		s, err := cl.js.Stream(ctx, cl.topo.AuditStream())
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		for _, src := range info.Sources {
			if src.Lag != 0 {
				return fmt.Errorf("audit stream %d behind %s", src.Lag, src.Name)
			}
		}
		return nil
	}); err != nil {
		cl.t.Fatalf("audit trail: %v", err)
	}
}
