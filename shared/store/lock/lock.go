// Package lock is a lease lock in Redis with fencing tokens, for work that
// one process at a time should do (the nightly reconcile of one tenant).
//
// A lease is SET key token NX PX ttl. Taking it also INCRs a fence counter
// in the same Lua script, so every grant carries a strictly larger number
// than any grant before it. A watchdog renews the lease (compare-and-PEXPIRE)
// every RenewEvery and cancels the holder's context the moment a renewal
// fails or finds the lease gone; releasing is compare-and-delete.
//
// A lease is not mutual exclusion on its own: a process paused past its TTL
// (GC, SIGSTOP, a VM migration) resumes believing it still holds the lease.
// Whatever the holder writes must therefore carry Fence() and the store it
// writes to must refuse a fence older than the newest it has seen
// (Kleppmann, "How to do distributed locking", 2016). The lease only keeps
// two holders from doing the same work most of the time.
//
// Keys (Redis Cluster safe: both share the {name} hash tag):
//
//	<prefix>{<name>}:lease   the holder's random token, with the lease TTL
//	<prefix>{<name>}:fence   the fence counter; never expires
package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors.
var (
	// ErrNotAcquired: someone else holds the lease.
	ErrNotAcquired = errors.New("lock: held by another owner")
	// ErrLost: the lease expired, was deleted or taken over, or could not be
	// renewed; the holder must stop writing.
	ErrLost = errors.New("lock: lease lost")
	// ErrReleased: the holder released the lease.
	ErrReleased = errors.New("lock: lease released")
)

// Options tune a Locker.
type Options struct {
	// Prefix starts every key, e.g. "optout:reconcile:" (tests use a random
	// one so they never collide).
	Prefix string
	// TTL is the lease length (default 60s). A crashed holder's work is
	// picked up by another process after at most this long.
	TTL time.Duration
	// RenewEvery is the watchdog period (default TTL/3). The first failed
	// renewal already cancels the holder; a third of the TTL leaves room for
	// a slow Redis round trip before the lease would expire.
	RenewEvery time.Duration
}

// Locker grants leases. It is safe for concurrent use.
type Locker struct {
	rdb  redis.UniversalClient
	opts Options
}

// New returns a Locker over rdb.
func New(rdb redis.UniversalClient, opts Options) (*Locker, error) {
	if rdb == nil {
		return nil, errors.New("lock: nil redis client")
	}
	if opts.TTL <= 0 {
		opts.TTL = 60 * time.Second
	}
	if opts.TTL < 10*time.Millisecond {
		return nil, fmt.Errorf("lock: ttl %s is below Redis' practical resolution", opts.TTL)
	}
	if opts.RenewEvery <= 0 {
		opts.RenewEvery = opts.TTL / 3
	}
	if opts.RenewEvery >= opts.TTL {
		return nil, fmt.Errorf("lock: renew period %s must be shorter than the ttl %s", opts.RenewEvery, opts.TTL)
	}
	return &Locker{rdb: rdb, opts: opts}, nil
}

// TTL returns the lease length.
func (l *Locker) TTL() time.Duration { return l.opts.TTL }

func (l *Locker) leaseKey(name string) string { return l.opts.Prefix + "{" + name + "}:lease" }
func (l *Locker) fenceKey(name string) string { return l.opts.Prefix + "{" + name + "}:fence" }

// acquireScript takes the lease and, only then, raises the fence. ARGV[3]
// is a floor: when the counter was lost (a Redis restart without
// persistence) the caller passes the newest fence its store has seen, so
// the new grant is still larger than every earlier one.
var acquireScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
local f = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if f <= floor then
  f = floor + 1
  redis.call('SET', KEYS[2], f)
end
return f
`)

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// AcquireOption tunes TryAcquire.
type AcquireOption func(*acquireOpts)

type acquireOpts struct{ minFence uint64 }

// MinFence makes the granted fence larger than n: pass the newest fence the
// fenced store holds, so a Redis that lost its counter cannot hand out a
// token the store would refuse forever.
func MinFence(n uint64) AcquireOption { return func(o *acquireOpts) { o.minFence = n } }

// TryAcquire takes the lease on name without waiting: ErrNotAcquired when
// another owner holds it. The lease's context derives from ctx and is
// cancelled when ctx ends, the lease is lost, or it is released.
func (l *Locker) TryAcquire(ctx context.Context, name string, opts ...AcquireOption) (*Lease, error) {
	var o acquireOpts
	for _, opt := range opts {
		opt(&o)
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	// The lease is valid from before the request left, not from the answer.
	start := time.Now()
	n, err := acquireScript.Run(ctx, l.rdb, []string{l.leaseKey(name), l.fenceKey(name)},
		token, l.opts.TTL.Milliseconds(), strconv.FormatUint(o.minFence, 10)).Int64()
	if err != nil {
		return nil, fmt.Errorf("lock %s: acquire: %w", name, err)
	}
	if n == 0 {
		return nil, ErrNotAcquired
	}
	lctx, cancel := context.WithCancelCause(ctx)
	ls := &Lease{
		l: l, name: name, token: token, fence: uint64(n),
		ctx: lctx, cancel: cancel, validUntil: start.Add(l.opts.TTL),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go ls.watch()
	return ls, nil
}

// Fence returns the current fence counter of name (0 when never granted).
func (l *Locker) Fence(ctx context.Context, name string) (uint64, error) {
	v, err := l.rdb.Get(ctx, l.fenceKey(name)).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lock %s: read fence: %w", name, err)
	}
	return v, nil
}

// Held reports whether anyone holds name and for how much longer.
func (l *Locker) Held(ctx context.Context, name string) (bool, time.Duration, error) {
	d, err := l.rdb.PTTL(ctx, l.leaseKey(name)).Result()
	if err != nil {
		return false, 0, fmt.Errorf("lock %s: ttl: %w", name, err)
	}
	// PTTL answers -2 for a missing key (go-redis passes it through as -2ns).
	if d < 0 {
		return false, 0, nil
	}
	return true, d, nil
}

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lock: token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Lease is one grant. Its methods are safe for concurrent use.
type Lease struct {
	l      *Locker
	name   string
	token  string
	fence  uint64
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	validUntil time.Time

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// Name is the locked name.
func (ls *Lease) Name() string { return ls.name }

// Fence is this grant's fencing token: larger than every earlier grant's.
func (ls *Lease) Fence() uint64 { return ls.fence }

// Context is cancelled the moment the lease is lost or released; do the
// leased work under it. context.Cause says why (ErrLost, ErrReleased, or
// the parent's cause).
func (ls *Lease) Context() context.Context { return ls.ctx }

// Valid reports whether the lease is held as far as this process knows:
// not lost or released, and the last successful renewal not yet expired by
// the local clock. Check it right before a commit; the fence is still what
// makes a stale commit harmless.
func (ls *Lease) Valid() bool {
	if ls.ctx.Err() != nil {
		return false
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return time.Now().Before(ls.validUntil)
}

// watch renews the lease until it is released, lost or its context ends.
func (ls *Lease) watch() {
	defer close(ls.done)
	t := time.NewTicker(ls.l.opts.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ls.stop:
			return
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		if err := ls.renew(); err != nil {
			ls.cancel(err)
			return
		}
	}
}

// renew extends the lease. A renewal that cannot finish before the lease
// would expire counts as failed: by then another owner may hold it.
func (ls *Lease) renew() error {
	ls.mu.Lock()
	deadline := ls.validUntil
	ls.mu.Unlock()
	start := time.Now()
	if !start.Before(deadline) {
		return fmt.Errorf("%w: %s expired before it could be renewed", ErrLost, ls.name)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ls.ctx), deadline)
	defer cancel()
	n, err := renewScript.Run(ctx, ls.l.rdb, []string{ls.l.leaseKey(ls.name)}, ls.token, ls.l.opts.TTL.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("%w: %s: renew: %v", ErrLost, ls.name, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s is no longer ours (expired, deleted or taken over)", ErrLost, ls.name)
	}
	ls.mu.Lock()
	ls.validUntil = start.Add(ls.l.opts.TTL)
	ls.mu.Unlock()
	return nil
}

// Err returns nil while the lease is held, else why it is not.
func (ls *Lease) Err() error {
	if ls.ctx.Err() == nil {
		return nil
	}
	return context.Cause(ls.ctx)
}

// Release stops the watchdog and deletes the lease if it is still ours. It
// is safe to call more than once and after the lease was lost. ctx bounds
// the Redis call; pass a fresh one when the work's context is already done.
func (ls *Lease) Release(ctx context.Context) error {
	ls.stopOnce.Do(func() { close(ls.stop) })
	<-ls.done
	ls.cancel(ErrReleased)
	if _, err := releaseScript.Run(ctx, ls.l.rdb, []string{ls.l.leaseKey(ls.name)}, ls.token).Int64(); err != nil {
		return fmt.Errorf("lock %s: release: %w", ls.name, err)
	}
	return nil
}
