package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// ErrFenced refuses a write whose fencing token is older than the one the
// entry was last written with: a newer lease holder has taken over.
var ErrFenced = errors.New("ledger: write refused: fencing token older than the entry's")

// ErrLeaseExpired refuses a fenced writer's write once its lease has run
// out by its own clock (a holder paused past its lease, its watchdog not
// yet awake).
var ErrLeaseExpired = errors.New("ledger: write refused: the writer's lease expired by its local clock")

// Fence is a lease a writer holds: the token every write of it carries,
// and whether the lease still holds by the holder's own clock. The
// reconciler's lease is one.
type Fence interface {
	Fence() uint64
	Valid() bool
}

// Writer changes the entries of one tenant for writes of one Salesforce
// field (the field "dirty" is judged on). A fenced writer (Fenced) checks
// its lease before every write (and, when the fence is a FenceChecker,
// that no newer holder has raised it), stamps its token on every entry it
// writes and is refused an entry a newer holder stamped: every write of a
// run is fenced because the run is given a fenced writer, not because each
// call site remembers to check.
type Writer struct {
	l      *Ledger
	tenant string
	field  string
	fence  Fence
	stamp  bool // the fence's token is stamped on entries and compared
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// Fenced makes every write of the writer fenced by f.
func Fenced(f Fence) WriterOption { return func(w *Writer) { w.fence, w.stamp = f, true } }

// Guarded checks f before every write, as Fenced does, but stamps no token
// and compares none: for a holder of another lease than the nightly run's
// (the Change Data Capture subscriber), whose fence counter is its own, so
// its tokens cannot be ordered against the run's. It writes as the pusher
// does (no stamp), through the same compare-and-set and state machine.
func Guarded(f Fence) WriterOption { return func(w *Writer) { w.fence, w.stamp = f, false } }

// FenceChecker is a fence that can also say, with a round trip, that no
// newer holder has raised it (the reconciler's lease and its tenant's
// fence record).
type FenceChecker interface {
	CheckFence(ctx context.Context) error
}

// Check reports whether the writer may still act where the store cannot
// fence it (before a Salesforce call, or publishing an event): always for
// an unfenced writer; for a fenced one, while its lease holds by its own
// clock and, if its fence is a FenceChecker, no newer holder has raised
// the fence. Every Update of a fenced writer asks it too: the token stamped
// on an entry refuses only entries a newer holder has already written, and
// the fence record refuses the others.
func (w *Writer) Check(ctx context.Context) error {
	if w.fence == nil {
		return nil
	}
	if !w.fence.Valid() {
		return ErrLeaseExpired
	}
	if c, ok := w.fence.(FenceChecker); ok {
		return c.CheckFence(ctx)
	}
	return nil
}

// Writer returns a writer of tenant's entries for field.
func (l *Ledger) Writer(tenant, field string, opts ...WriterOption) *Writer {
	w := &Writer{l: l, tenant: tenant, field: field}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Snapshot is an entry as a writer last saw it: at Rev, with the person's
// dirty marker at revision Mark (0: unknown). Writes that start from one
// (From) still compare-and-set on Rev, so a snapshot that has moved costs a
// read, never a wrong write; Mark lets a write skip the marker's round trips.
//
// Held says the writer holds an event of the person unacked, and settles it
// only once a write leaves the person clean or after Mark: until then the
// event, redelivered if the writer dies, is what owes the push, so a write
// that leaves the person dirty puts no marker and one that leaves it clean
// deletes none it does not know of (a stale marker is swept).
type Snapshot struct {
	Entry     optout.Entry
	Rev, Mark uint64
	Held      bool
}

// UpdateOption changes one Update (or Ingest).
type UpdateOption func(*update)

type update struct {
	known   *Snapshot
	exists  bool // known says an entry exists
	basedOn uint64
	based   bool
	held    bool
	aliases []string
}

// From starts the update from the writer's snapshot instead of reading the
// entry (not for a fenced writer, which always reads under its fence), and
// bases the step on its revision (BasedOn); Snapshot.Held is Held.
func From(s Snapshot) UpdateOption {
	return func(u *update) {
		u.known, u.exists = &s, true
		u.basedOn, u.based, u.held = s.Rev, true, s.Held
	}
}

// BasedOn tells the step whether the entry is still at rev, the revision
// the writer read before acting on Salesforce (optout.At.Current).
func BasedOn(rev uint64) UpdateOption {
	return func(u *update) { u.basedOn, u.based = rev, true }
}

// Held: the writer holds an event of the person unacked (Snapshot.Held).
func Held() UpdateOption { return func(u *update) { u.held = true } }

// Alias makes the Salesforce ids aliases of the person once the update is
// stored, so their events reach it (a converted Lead and its Contact).
func Alias(salesforceIDs ...string) UpdateOption {
	return func(u *update) { u.aliases = append(u.aliases, salesforceIDs...) }
}

// Result is what an update came to: the person's key (after following a
// merge), its entry and revision as stored, whether the step changed it,
// and the revision of the person's dirty marker as far as the writer knows
// it (0: unknown, or none). Moved says the entry was gone, or no longer at
// the revision the step was based on, when the step was last applied.
type Result struct {
	Key     string
	Entry   optout.Entry
	Rev     uint64
	Mark    uint64
	Changed bool
	Moved   bool
}

// Snapshot is the result as a snapshot to start a later update from.
func (r Result) Snapshot() Snapshot { return Snapshot{Entry: r.Entry, Rev: r.Rev, Mark: r.Mark} }

// errMerged redirects an update to the entry a retired one was merged into.
type errMerged struct{ into string }

func (e errMerged) Error() string { return "merged into " + e.into }

// Update applies step to the person under key inside a compare-and-set
// loop, following a merge, and keeps the dirty set in step.
func (w *Writer) Update(ctx context.Context, key string, step optout.Step, opts ...UpdateOption) (Result, error) {
	var u update
	for _, o := range opts {
		o(&u)
	}
	res, err := w.update(ctx, key, step, &u)
	if err != nil || len(u.aliases) == 0 {
		return res, err
	}
	for _, id := range u.aliases {
		if _, err := w.l.alias(ctx, res.Entry.Tenant, id, res.Key); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (w *Writer) update(ctx context.Context, key string, step optout.Step, u *update) (Result, error) {
	l, field := w.l, w.field
	if err := w.Check(ctx); err != nil {
		return Result{Key: key}, err
	}
	var mark uint64
	var from []kv.Option
	known := u.known
	if known != nil && w.fence == nil {
		mark = known.Mark
		// The callback takes the entry itself (c.Passed), not its encoding:
		// a JSON round trip per write was a tenth of the pusher's CPU.
		from = append(from, kv.From(kv.Current{Rev: known.Rev, Exists: u.exists}))
	}
	held := u.held
	for hops := 0; ; hops++ {
		var (
			prev, next optout.Entry
			existed    bool
			changed    bool
			moved      bool
		)
		r, err := kv.Update(ctx, l.kv, key, func(c kv.Current) ([]byte, bool, error) {
			var cur stored
			if c.Passed {
				cur.Entry = known.Entry // the transitions are pure: it is not changed
			} else if c.Exists {
				if err := json.Unmarshal(c.Value, &cur); err != nil {
					return nil, false, fmt.Errorf("ledger decode %s: %w", key, err)
				}
			}
			if c.Exists && cur.MergedInto != "" {
				return nil, false, errMerged{cur.MergedInto}
			}
			var stamp uint64
			if w.fence != nil {
				if !w.fence.Valid() {
					return nil, false, ErrLeaseExpired
				}
			}
			if w.fence != nil && w.stamp {
				stamp = w.fence.Fence()
				if cur.Fence > stamp {
					return nil, false, fmt.Errorf("%w (%s: entry fence %d, writer fence %d)", ErrFenced, key, cur.Fence, stamp)
				}
			}
			current := !u.based || (c.Exists && c.Rev == u.basedOn)
			moved = !c.Exists || !current
			prev, existed = cur.Entry, c.Exists
			next, changed = step(cur.Entry, optout.At{Tenant: w.tenant, Field: field, Exists: c.Exists, Current: current, Now: l.now()})
			if !changed {
				next = cur.Entry
				if c.Passed {
					// No write checks a no-op: decide it on the entry as stored.
					return nil, false, kv.ErrReread
				}
				return nil, false, nil
			}
			next.Version = cur.Version + 1
			next.ChangedAt = l.now()
			data, err := json.Marshal(stored{Entry: next, Fence: stamp})
			if err != nil {
				return nil, false, fmt.Errorf("ledger encode %s: %w", key, err)
			}
			return data, true, nil
		}, from...)
		var m errMerged
		if errors.As(err, &m) && hops < 4 {
			key, mark, held, from, known = m.into, 0, false, nil, nil
			continue
		}
		if err != nil {
			return Result{Key: key, Entry: prev, Rev: r.Rev, Moved: moved}, fmt.Errorf("ledger %s: %w", key, err)
		}
		if !r.Wrote {
			if existed && next.Dirty(field) && !held {
				// A crash may have lost the marker after the write that made
				// the person dirty: a redelivery puts it back (a held one
				// owes the push itself).
				if m, err := l.markDirty(ctx, key, next); err == nil {
					mark = m
				}
			}
			return Result{Key: key, Entry: prev, Rev: r.Rev, Mark: mark, Moved: moved}, nil
		}
		res := Result{Key: key, Entry: next, Rev: r.Rev, Changed: true, Moved: moved}
		res.Mark, err = l.syncDirty(ctx, key, prev, existed, next, r.Rev, field, mark, held)
		return res, err
	}
}
