package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrFenced refuses a write whose fencing token is older than the one the
// entry was last written with: a newer lease holder has taken over.
var ErrFenced = errors.New("ledger: write refused: fencing token older than the entry's")

// fenced is an entry as stored: the Entry's fields plus the fence of the
// fenced writer that last changed it. Writers that do not fence (the
// pusher's Update) write no stamp, which resets it to 0; the fence only
// orders fenced writers among themselves, and every fenced write still goes
// through compare-and-set against whatever the pusher wrote.
type fenced struct {
	Entry
	Fence uint64 `json:"reconcileFence,omitempty"`
}

// FencedAuditRecord is the audit record of a fenced write: AuditRecord plus
// the writer's fence (readers that decode AuditRecord ignore it).
type FencedAuditRecord struct {
	AuditRecord
	Fence uint64 `json:"reconcileFence"`
}

// GetFenced returns an entry, the fence it was last written with (0 when a
// non-fenced writer wrote it last) and its revision.
func (l *Ledger) GetFenced(ctx context.Context, key string) (Entry, uint64, uint64, error) {
	kve, err := l.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, 0, 0, ErrNotFound
	}
	if err != nil {
		return Entry{}, 0, 0, fmt.Errorf("ledger get %s: %w", key, err)
	}
	var f fenced
	if err := json.Unmarshal(kve.Value(), &f); err != nil {
		return Entry{}, 0, 0, fmt.Errorf("ledger decode %s: %w", key, err)
	}
	return f.Entry, f.Fence, kve.Revision(), nil
}

// FencedUpdate is Update for a writer holding a fencing token (the
// reconciler). Inside the compare-and-set loop it refuses, with ErrFenced,
// an entry last written with a larger fence, and stamps fence on what it
// writes; so once a newer holder has written an entry, a stale holder can
// never overwrite it, whatever it believes about its lease.
func (l *Ledger) FencedUpdate(ctx context.Context, key string, fence uint64, fn func(e *Entry, exists bool) (bool, error)) (Entry, error) {
	return l.update(ctx, key, &fence, fn)
}
