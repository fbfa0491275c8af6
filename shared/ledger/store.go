package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/natsx"
)

// Ledger reads entries and changes them through the state machine. Beside
// the entries it keeps two indexes in their own buckets: aliases (a
// Salesforce id, or a converted Lead, to its person's key) and the dirty
// set (the persons whose Salesforce value is not yet what they want: the
// push's cluster-wide work list, swept periodically), which leaves out a
// person while a writer holds an unacked event of theirs (Snapshot.Held).
type Ledger struct {
	kv, dirty, aliases jetstream.KeyValue
	js                 jetstream.JetStream
	topo               natsx.Topology
	// Now is the clock of ChangedAt stamps (tests set it).
	Now func() time.Time
}

// ErrNotFound is returned by Get for an unknown person.
var ErrNotFound = errors.New("ledger: no entry")

// New opens the ledger of a provisioned topology. It refuses a topology
// whose audit stream does not source the ledger's stream, so the audit
// trail cannot be switched off by a missing field.
func New(ctx context.Context, p *natsx.Provisioned) (*Ledger, error) {
	if p == nil || p.Ledger == nil || p.Dirty == nil || p.Aliases == nil || p.JS == nil {
		return nil, errors.New("ledger: the ledger, dirty and alias buckets and a JetStream handle are required")
	}
	s, err := p.JS.Stream(ctx, p.Topology.AuditStream())
	if err != nil {
		return nil, fmt.Errorf("ledger: audit stream %s: %w", p.Topology.AuditStream(), err)
	}
	want := "KV_" + p.Topology.LedgerBucket()
	sourced := false
	for _, src := range s.CachedInfo().Config.Sources {
		if src != nil && src.Name == want {
			sourced = true
		}
	}
	if !sourced {
		return nil, fmt.Errorf("ledger: audit stream %s does not source %s: the audit trail would miss changes", p.Topology.AuditStream(), want)
	}
	return &Ledger{kv: p.Ledger, dirty: p.Dirty, aliases: p.Aliases, js: p.JS, topo: p.Topology}, nil
}

func (l *Ledger) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}

// Get returns an entry and its revision, as stored (a retired entry too).
func (l *Ledger) Get(ctx context.Context, key string) (Entry, uint64, error) {
	e, _, rev, err := l.GetFenced(ctx, key)
	return e, rev, err
}

// Person returns the entry that holds the person stored under key,
// following a merge, and its key.
func (l *Ledger) Person(ctx context.Context, key string) (string, Entry, uint64, error) {
	for range 4 {
		e, rev, err := l.Get(ctx, key)
		if err != nil || e.MergedInto == "" {
			return key, e, rev, err
		}
		key = e.MergedInto
	}
	return "", Entry{}, 0, fmt.Errorf("ledger: %s: merge chain too long", key)
}

// transition is one state-machine step on an entry as it is now; rev is
// the revision it was read at (0 when absent).
type transition func(e Entry, exists bool, rev uint64) (Entry, bool, error)

// written is what a change came to: the entry's key (after following a
// merge), the entry as stored, its revision, whether it changed, and the
// revision of the person's dirty marker as far as the change knows it (0:
// unknown, or none).
type written struct {
	key     string
	entry   Entry
	rev     uint64
	changed bool
	mark    uint64
}

// change runs t inside a compare-and-set loop on key, following a merge,
// and keeps the dirty set in step. With a writer fence it refuses an entry
// stamped with a larger one and stamps its own.
func (l *Ledger) change(ctx context.Context, key string, field string, writerFence *uint64, t transition) (written, error) {
	return l.changeFrom(ctx, key, field, writerFence, nil, false, t)
}

// Snapshot is an entry as a writer last saw it: at Rev, with the person's
// dirty marker at revision Mark (0: unknown). Writes that start from one
// still compare-and-set on Rev, so a snapshot that has moved costs a read,
// never a wrong write; Mark lets a write skip the marker's round trips.
//
// Held says the writer holds an event of the person unacked, and settles it
// only once a write leaves the person clean or after MarkHeld: until then
// the event, redelivered if the writer dies, is what owes the push, so a
// write that leaves the person dirty puts no marker and one that leaves it
// clean deletes none it does not know of (a stale marker is swept).
type Snapshot struct {
	Entry     Entry
	Rev, Mark uint64
	Held      bool
}

// snapshot is a Snapshot, or (exists false) the caller's good reason to
// believe there is no entry yet.
type snapshot struct {
	Snapshot
	exists bool
}

// changeFrom is change whose first attempt starts from known (when not
// nil) instead of reading the entry: the compare-and-set on known.Rev (a
// create, when known says absent) still refuses a moved or existing entry,
// and the next attempt reads it. Only unfenced writers pass one (known
// carries no fence). held is Snapshot.Held, for the key the change starts
// at (a merge followed leads to another person, whose marker is kept).
func (l *Ledger) changeFrom(ctx context.Context, key string, field string, writerFence *uint64, known *snapshot, held bool, t transition) (written, error) {
	var mark uint64
	if known != nil {
		mark = known.Mark
	}
	for attempt := 0; ; attempt++ {
		fromKnown := attempt == 0 && known != nil && writerFence == nil
		var (
			cur           Entry
			curFence, rev uint64
			err           error
		)
		exists := true
		if fromKnown {
			cur, rev, exists = known.Entry, known.Rev, known.exists
		} else {
			cur, curFence, rev, err = l.GetFenced(ctx, key)
			exists = err == nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return written{key: key}, err
		}
		if exists && cur.MergedInto != "" {
			key, mark, held = cur.MergedInto, 0, false
			continue
		}
		var stamp uint64
		if writerFence != nil {
			if curFence > *writerFence {
				return written{key: key, entry: cur, rev: rev}, fmt.Errorf("%w (%s: entry fence %d, writer fence %d)", ErrFenced, key, curFence, *writerFence)
			}
			stamp = *writerFence
		}
		next, changed, err := t(cur, exists, rev)
		if err != nil {
			return written{key: key, entry: cur, rev: rev}, err
		}
		if !changed && fromKnown {
			// No write checks a no-op: decide it on the entry as stored.
			continue
		}
		if !changed {
			if exists && next.Dirty(field) && !held {
				// A crash may have lost the marker after the write that made
				// the person dirty: a redelivery puts it back (a held one
				// owes the push itself).
				if m, err := l.markDirty(ctx, key, next); err == nil {
					mark = m
				}
			}
			return written{key: key, entry: cur, rev: rev, mark: mark}, nil
		}
		next.Version = cur.Version + 1
		next.ChangedAt = l.now()
		data, err := json.Marshal(fenced{Entry: next, Fence: stamp})
		if err != nil {
			return written{key: key}, fmt.Errorf("ledger encode %s: %w", key, err)
		}
		var newRev uint64
		if exists {
			newRev, err = l.kv.Update(ctx, key, data, rev)
		} else {
			newRev, err = l.kv.Create(ctx, key, data)
		}
		if isConflict(err) && attempt < 50 {
			continue
		}
		if err != nil {
			return written{key: key}, fmt.Errorf("ledger write %s: %w", key, err)
		}
		w := written{key: key, entry: next, rev: newRev, changed: true}
		w.mark, err = l.syncDirty(ctx, key, cur, exists, next, newRev, field, mark, held)
		return w, err
	}
}

// dirtyMark is a dirty-set member's value.
type dirtyMark struct {
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
}

// markDirty puts the person's marker and returns its revision.
func (l *Ledger) markDirty(ctx context.Context, key string, e Entry) (uint64, error) {
	data, _ := json.Marshal(dirtyMark{NextAttempt: e.Retry.NextAttempt})
	rev, err := l.dirty.Put(ctx, key, data)
	if err != nil {
		return 0, fmt.Errorf("ledger mark %s dirty: %w", key, err)
	}
	return rev, nil
}

// syncDirty keeps the dirty set in step with a write (made at wroteRev; 0
// when unknown) and returns the marker's revision as far as it knows (0:
// unknown or none). Every write that leaves the person dirty puts the
// marker, except one from a dirty entry whose marker the writer knows
// (mark, not 0) and whose next attempt is unchanged: the marker put after
// that entry's write stands, since a marker is only deleted after a write
// that leaves the person clean. After a write that leaves the person
// clean, the marker goes, without losing a concurrent writer's put (which
// follows its own write): with mark known, by a delete that only succeeds
// while the marker is still at mark (one round trip); else, or when another
// writer put it since, by a delete and a second look at the entry. A held
// write (Snapshot.Held) puts no marker and deletes none it does not know.
func (l *Ledger) syncDirty(ctx context.Context, key string, prev Entry, existed bool, next Entry, wroteRev uint64, field string, mark uint64, held bool) (uint64, error) {
	if held && (next.Dirty(field) || mark == 0) {
		return mark, nil
	}
	if next.Dirty(field) {
		if mark != 0 && existed && prev.Dirty(field) && prev.Retry.NextAttempt.Equal(next.Retry.NextAttempt) {
			return mark, nil
		}
		return l.markDirty(ctx, key, next)
	}
	if existed && !prev.Dirty(field) && prev.Retry.NextAttempt.IsZero() {
		return 0, nil // was clean, is clean: no marker to remove
	}
	if mark != 0 {
		err := l.dirty.Delete(ctx, key, jetstream.LastRevision(mark))
		if err == nil {
			return 0, nil
		}
		if !isConflict(err) {
			return 0, fmt.Errorf("ledger clear %s dirty: %w", key, err)
		}
		// Put again since: the second look below decides.
	}
	if err := l.dirty.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("ledger clear %s dirty: %w", key, err)
	}
	kve, err := l.getRaw(ctx, key)
	if err != nil {
		return 0, err
	}
	if wroteRev != 0 && kve.Revision() == wroteRev {
		// Still our clean write: no one wrote after it, so no one's marker
		// can have been deleted (and the entry needs no decoding).
		return 0, nil
	}
	now, _, _, err := decodeFenced(key, kve)
	if err != nil {
		return 0, err
	}
	if now.Dirty(field) {
		return l.markDirty(ctx, key, now)
	}
	return 0, nil
}

// IngestResult is what folding one event did.
type IngestResult struct {
	Key      string
	Entry    Entry
	Revision uint64
	// Mark is the revision of the person's dirty marker after the fold (0:
	// unknown, or clean): a push starting from the fold's entry passes it on.
	Mark uint64
	FoldResult
}

// Ingest folds one event into its person's entry, whatever ids it carries:
// by Sales Connect id when it has one, else through the alias index, else
// under the Salesforce id. The first event that links both ids merges an
// existing Salesforce-only entry into the person and retires it.
func (l *Ledger) Ingest(ctx context.Context, tenant string, in EventInput, field string) (IngestResult, error) {
	return l.ingest(ctx, tenant, in, field, false)
}

// IngestHeld is Ingest for a caller that holds the event unacked until a
// write leaves the person clean or MarkHeld has put the marker
// (Snapshot.Held): a fold that leaves the person dirty puts no marker, so
// an opt-out pushed at once never touches the dirty set.
func (l *Ledger) IngestHeld(ctx context.Context, tenant string, in EventInput, field string) (IngestResult, error) {
	return l.ingest(ctx, tenant, in, field, true)
}

func (l *Ledger) ingest(ctx context.Context, tenant string, in EventInput, field string, held bool) (IngestResult, error) {
	key, err := l.resolve(ctx, tenant, in.SalesConnectID, in.SalesforceID)
	if err != nil {
		return IngestResult{}, err
	}
	sfKey := ""
	if in.SalesforceID != "" {
		sfKey = Key(tenant, "", in.SalesforceID)
	}
	var known *snapshot
	if in.SalesConnectID != "" && sfKey != "" {
		// The alias first, then the merge: an event carrying only the
		// Salesforce id either lands before the merge reads its entry, or
		// finds the alias afterwards and merges itself.
		created, err := l.alias(ctx, tenant, in.SalesforceID, key)
		if err != nil {
			return IngestResult{}, err
		}
		if created {
			// No one had linked this Salesforce id: most likely a person we
			// have never seen, so try creating the entry without reading it
			// first (an existing one refuses the create and is read).
			known = &snapshot{}
		}
		if err := l.merge(ctx, sfKey, key, field); err != nil {
			return IngestResult{}, err
		}
	}
	var res FoldResult
	w, err := l.changeFrom(ctx, key, field, nil, known, held, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
		if !exists {
			cur = Entry{Tenant: tenant}
		}
		next, r := Fold(cur, exists, in, field)
		res = r
		return next, r.Changed, nil
	})
	key, e, rev, mark := w.key, w.entry, w.rev, w.mark
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest %s into %s: %w", in.ID, key, err)
	}
	if key == sfKey && in.SalesConnectID == "" {
		if target, ok, err := l.aliasOf(ctx, tenant, in.SalesforceID); err != nil {
			return IngestResult{}, err
		} else if ok && target != key {
			if err := l.merge(ctx, sfKey, target, field); err != nil {
				return IngestResult{}, err
			}
			key, e, rev, err = l.Person(ctx, target)
			if err != nil {
				return IngestResult{}, err
			}
			mark = 0
		}
	}
	return IngestResult{Key: key, Entry: e, Revision: rev, Mark: mark, FoldResult: res}, nil
}

// resolve finds the key of the person an event is about.
func (l *Ledger) resolve(ctx context.Context, tenant, salesConnectID, salesforceID string) (string, error) {
	if salesConnectID != "" {
		return Key(tenant, salesConnectID, ""), nil
	}
	if salesforceID == "" {
		return "", errors.New("ledger: an event needs a Sales Connect id or a Salesforce id")
	}
	if target, ok, err := l.aliasOf(ctx, tenant, salesforceID); err != nil || ok {
		return target, err
	}
	return Key(tenant, "", salesforceID), nil
}

func aliasKey(tenant, salesforceID string) string { return tenant + "." + salesforceID }

func (l *Ledger) aliasOf(ctx context.Context, tenant, salesforceID string) (string, bool, error) {
	kve, err := l.aliases.Get(ctx, aliasKey(tenant, salesforceID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	return string(kve.Value()), true, nil
}

// alias points a Salesforce id at a person's key, and reports whether it
// created the alias (no person had the id). Create first: a new person's
// alias is one round trip, an existing alias two.
func (l *Ledger) alias(ctx context.Context, tenant, salesforceID, key string) (created bool, err error) {
	_, err = l.aliases.Create(ctx, aliasKey(tenant, salesforceID), []byte(key))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	if cur, ok, err := l.aliasOf(ctx, tenant, salesforceID); err != nil || (ok && cur == key) {
		return false, err
	}
	if _, err := l.aliases.Put(ctx, aliasKey(tenant, salesforceID), []byte(key)); err != nil {
		return false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	return false, nil
}

// merge folds the entry under from into the person under into, then
// retires it by compare-and-set on the revision merged; a write to from
// in between makes it merge again (merging is idempotent).
func (l *Ledger) merge(ctx context.Context, from, into, field string) error {
	if from == into {
		return nil
	}
	for attempt := 0; attempt < 50; attempt++ {
		src, rev, err := l.Get(ctx, from)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if src.MergedInto != "" {
			return nil
		}
		if _, err := l.change(ctx, into, field, nil, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
			if !exists {
				cur = Entry{Tenant: src.Tenant}
			}
			next, changed := Merge(cur, src, field)
			return next, changed || !exists, nil
		}); err != nil {
			return fmt.Errorf("merge %s into %s: %w", from, into, err)
		}
		retired, _ := Retire(src, into)
		retired.Version = src.Version + 1
		retired.ChangedAt = l.now()
		data, err := json.Marshal(fenced{Entry: retired})
		if err != nil {
			return err
		}
		retiredRev, err := l.kv.Update(ctx, from, data, rev)
		if isConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("retire %s: %w", from, err)
		}
		_, err = l.syncDirty(ctx, from, src, true, retired, retiredRev, field, 0, false)
		return err
	}
	return fmt.Errorf("merge %s into %s: too much contention", from, into)
}

// Wrote records a write of Salesforce made from the entry read at readRev:
// confirmed only if the entry has not moved since (see machine.go Wrote).
func (l *Ledger) Wrote(ctx context.Context, key string, readRev uint64, w Write, field string) (Entry, error) {
	c, err := l.change(ctx, key, field, nil, wroteAt(readRev, w, field))
	return c.entry, err
}

// WroteFrom is Wrote for a caller holding the entry its write was made
// from (the push's batch): the confirmation's compare-and-set starts from
// it, without reading the entry again, and a known marker goes without a
// second look. It returns the entry as stored after.
func (l *Ledger) WroteFrom(ctx context.Context, key string, read Snapshot, w Write, field string) (Snapshot, error) {
	c, err := l.changeFrom(ctx, key, field, nil, &snapshot{Snapshot: read, exists: true}, read.Held, wroteAt(read.Rev, w, field))
	return Snapshot{Entry: c.entry, Rev: c.rev, Mark: c.mark}, err
}

// FencedWrote is Wrote for a fenced writer (the reconciler).
func (l *Ledger) FencedWrote(ctx context.Context, key string, fence, readRev uint64, w Write, field string) (Entry, error) {
	c, err := l.change(ctx, key, field, &fence, wroteAt(readRev, w, field))
	return c.entry, err
}

func wroteAt(readRev uint64, w Write, field string) transition {
	return func(cur Entry, exists bool, rev uint64) (Entry, bool, error) {
		if !exists {
			return cur, false, nil
		}
		w := w
		w.Current = rev == readRev
		next, changed := Wrote(cur, w, field)
		return next, changed, nil
	}
}

// Attempted is what recording a write before making it came to.
type Attempted struct {
	Entry Entry
	// Rev is the revision the write's confirmation is to be based on, and
	// Mark the person's dirty marker's as far as known (0: unknown).
	Rev, Mark uint64
	// Moved: the entry changed since it was read; nothing was recorded and
	// the caller reads the person again.
	Moved bool
	// Held: another writer's claim holds the person; nothing was recorded
	// and the caller leaves the person until the claim ends.
	Held *Claim
}

// Ok reports whether the write may be made.
func (a Attempted) Ok() bool { return !a.Moved && a.Held == nil }

// Attempting records, before a write of Salesforce made from the entry
// read (read.Rev), that the write may land, and takes its claim
// (machine.go Attempt). The compare-and-set starts from read.
func (l *Ledger) Attempting(ctx context.Context, key string, read Snapshot, w Write, field string) (Attempted, error) {
	return l.attempting(ctx, key, nil, &snapshot{Snapshot: read, exists: true}, read.Rev, w, field)
}

// FencedAttempting is Attempting for a fenced writer (the reconciler),
// which reads the entry again under its fence.
func (l *Ledger) FencedAttempting(ctx context.Context, key string, fence, readRev uint64, w Write, field string) (Attempted, error) {
	return l.attempting(ctx, key, &fence, nil, readRev, w, field)
}

func (l *Ledger) attempting(ctx context.Context, key string, fence *uint64, known *snapshot, readRev uint64, w Write, field string) (Attempted, error) {
	var a Attempted
	held := known != nil && known.Held
	c, err := l.changeFrom(ctx, key, field, fence, known, held, func(cur Entry, exists bool, r uint64) (Entry, bool, error) {
		a.Moved, a.Held = false, nil
		if !exists || r != readRev {
			a.Moved = true
			return cur, false, nil
		}
		next, changed, held := Attempt(cur, w, field)
		a.Held = held
		return next, changed, nil
	})
	a.Entry, a.Rev, a.Mark = c.entry, c.rev, c.mark
	if err != nil {
		return a, fmt.Errorf("record the write of %s before making it: %w", key, err)
	}
	return a, nil
}

// Observed records a value read from Salesforce at readRev; an entry that
// moved since is left for the next round.
func (l *Ledger) Observed(ctx context.Context, key string, readRev uint64, salesforceID, f string, value bool, field string) (Entry, error) {
	now := l.now()
	c, err := l.change(ctx, key, field, nil, func(cur Entry, exists bool, rev uint64) (Entry, bool, error) {
		if !exists || rev != readRev {
			return cur, false, nil
		}
		next, changed := Observed(cur, salesforceID, f, value, now, field)
		return next, changed, nil
	})
	return c.entry, err
}

// Failed records a failed write.
func (l *Ledger) Failed(ctx context.Context, key string, f Failure, field string) (Entry, FailOutcome, error) {
	var out FailOutcome
	c, err := l.change(ctx, key, field, nil, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
		if !exists {
			return cur, false, nil
		}
		if cur.SalesforceID != f.Write.SalesforceID {
			// The person moved to another record meanwhile: only the
			// failed write's claim is over.
			next, released := Release(cur, f.Write.Claim)
			return next, released, nil
		}
		next, o := Failed(cur, f, field)
		out = o
		return next, true, nil
	})
	return c.entry, out, err
}

// FollowConversion points the person at the Contact its Lead became and
// makes the Contact an alias of the person.
func (l *Ledger) FollowConversion(ctx context.Context, key, leadID, contactID, field string) (Entry, error) {
	c, err := l.change(ctx, key, field, nil, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
		if !exists {
			return cur, false, nil
		}
		next, changed := ConversionFollowed(cur, leadID, contactID, field)
		return next, changed, nil
	})
	key, e := c.key, c.entry
	if err != nil {
		return e, err
	}
	if _, err := l.alias(ctx, e.Tenant, contactID, key); err != nil {
		return e, err
	}
	_, err = l.alias(ctx, e.Tenant, leadID, key)
	return e, err
}

// Learn records what the nightly reconcile learnt from Salesforce, fenced
// by its lease. It reports whether the entry changed.
func (l *Ledger) Learn(ctx context.Context, key string, fence uint64, o Observation, field string) (Entry, bool, error) {
	tenantID, _, _ := strings.Cut(key, ".")
	c, err := l.change(ctx, key, field, &fence, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
		if !exists {
			cur = Entry{Tenant: tenantID}
		}
		next, changed := Learnt(cur, exists, o, field)
		return next, changed, nil
	})
	return c.entry, c.changed, err
}

// DirtyItem is one member of the dirty set.
type DirtyItem struct {
	Key         string
	NextAttempt time.Time
}

// Dirty lists the tenant's dirty persons (the push's sweep): a KV watch over
// the dirty bucket that stops after the current values.
func (l *Ledger) Dirty(ctx context.Context, tenant string, fn func(DirtyItem)) error {
	return l.dirtyMatching(ctx, tenant, tenant+".>", fn)
}

// DirtyAll lists every tenant's dirty persons with one watch: a replica
// pushing for a thousand tenants sweeps with one consumer, not a thousand.
func (l *Ledger) DirtyAll(ctx context.Context, fn func(DirtyItem)) error {
	return l.dirtyMatching(ctx, "(all tenants)", ">", fn)
}

func (l *Ledger) dirtyMatching(ctx context.Context, tenant, filter string, fn func(DirtyItem)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := l.dirty.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("ledger dirty %s: %w", tenant, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kve, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("ledger dirty %s: watcher closed", tenant)
			}
			if kve == nil {
				return nil
			}
			var m dirtyMark
			_ = json.Unmarshal(kve.Value(), &m) // a bad value is still dirty
			fn(DirtyItem{Key: kve.Key(), NextAttempt: m.NextAttempt})
		}
	}
}

// MarkDirtyIfNeeded puts a person found dirty by a full resync back in the
// dirty set (a marker lost between a write and its put).
func (l *Ledger) MarkDirtyIfNeeded(ctx context.Context, key string, e Entry, field string) error {
	if !e.Dirty(field) {
		return nil
	}
	_, err := l.markDirty(ctx, key, e)
	return err
}

// MarkHeld puts the person's dirty marker without reading the entry, for
// a holder about to settle a held event (Snapshot.Held) whose push did not
// leave the person clean: from then on the marker, not the event, owes
// the push. A marker on a person that is clean by then is stale, and swept.
func (l *Ledger) MarkHeld(ctx context.Context, key string) error {
	_, err := l.markDirty(ctx, key, Entry{})
	return err
}

// Forget removes a clean person from the dirty set (a stale marker).
func (l *Ledger) Forget(ctx context.Context, key, field string) error {
	e, rev, err := l.Get(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	_, err = l.syncDirty(ctx, key, Entry{}, false, e, rev, field, 0, false)
	return err
}

// isConflict recognises a lost compare-and-set: ErrKeyRevisionMismatch from
// Update, ErrKeyExists from a racing Create, and the raw API codes 10071
// (wrong last sequence) and 10164 (clustered) that older paths surface.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164)
}

// FencedObserved records, for a fenced writer (the reconciler), a value it
// read from Salesforce, and returns the entry and its revision after.
func (l *Ledger) FencedObserved(ctx context.Context, key string, fence uint64, salesforceID, f string, value bool, field string) (Entry, uint64, error) {
	now := l.now()
	c, err := l.change(ctx, key, field, &fence, func(cur Entry, exists bool, _ uint64) (Entry, bool, error) {
		if !exists {
			return cur, false, nil
		}
		next, changed := Observed(cur, salesforceID, f, value, now, field)
		return next, changed, nil
	})
	return c.entry, c.rev, err
}
