package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// dirtyMark is a dirty-set member's value.
type dirtyMark struct {
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
}

// markDirty puts the person's marker and returns its revision.
func (l *Ledger) markDirty(ctx context.Context, key string, e optout.Entry) (uint64, error) {
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
func (l *Ledger) syncDirty(ctx context.Context, key string, prev optout.Entry, existed bool, next optout.Entry, wroteRev uint64, field string, mark uint64, held bool) (uint64, error) {
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
		if !kv.IsConflict(err) {
			return 0, fmt.Errorf("ledger clear %s dirty: %w", key, err)
		}
		// Put again since: the second look below decides.
	}
	if err := l.dirty.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("ledger clear %s dirty: %w", key, err)
	}
	c, err := kv.Get(ctx, l.kv, key)
	if err != nil {
		return 0, fmt.Errorf("ledger get: %w", err)
	}
	if !c.Exists {
		return 0, ErrNotFound
	}
	if wroteRev != 0 && c.Rev == wroteRev {
		// Still our clean write: no one wrote after it, so no one's marker
		// can have been deleted (and the entry needs no decoding).
		return 0, nil
	}
	now, err := decode(key, c)
	if err != nil {
		return 0, err
	}
	if now.Entry.Dirty(field) {
		return l.markDirty(ctx, key, now.Entry)
	}
	return 0, nil
}

// Mark puts the person's dirty marker: when e is dirty on the writer's
// field (a person a full resync found dirty, its marker lost between a
// write and its put), or without reading the entry when e is nil (a holder
// about to settle a held event, Snapshot.Held, whose push did not leave the
// person clean: from then on the marker, not the event, owes the push; a
// marker on a person clean by then is stale, and swept).
func (w *Writer) Mark(ctx context.Context, key string, e *optout.Entry) error {
	if e == nil {
		e = &optout.Entry{}
	} else if !e.Dirty(w.field) {
		return nil
	}
	_, err := w.l.markDirty(ctx, key, *e)
	return err
}

// Forget removes a clean person from the dirty set (a stale marker).
func (w *Writer) Forget(ctx context.Context, key string) error {
	it, err := w.l.Get(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	_, err = w.l.syncDirty(ctx, key, optout.Entry{}, false, it.Entry, it.Rev, w.field, 0, false)
	return err
}

// DirtyItem is one member of the dirty set.
type DirtyItem struct {
	Key         string
	NextAttempt time.Time
}

// Dirty lists the dirty persons of tenant, or of every tenant when tenant
// is "" (a replica pushing for a thousand tenants sweeps with one
// consumer, not a thousand): a KV watch over the dirty bucket that stops
// after the current values.
func (l *Ledger) Dirty(ctx context.Context, tenant string, fn func(DirtyItem)) error {
	filter, name := tenant+".>", tenant
	if tenant == "" {
		filter, name = ">", "(all tenants)"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := l.dirty.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("ledger dirty %s: %w", name, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kve, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("ledger dirty %s: watcher closed", name)
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
