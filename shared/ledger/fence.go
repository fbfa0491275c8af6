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
// fenced writer that last changed it. Writers that do not fence (ingest and
// the push) write no stamp, which resets it to 0; the fence only orders
// fenced writers among themselves, and every fenced write still goes
// through compare-and-set against whatever the pusher wrote.
type fenced struct {
	Entry
	Fence uint64 `json:"reconcileFence,omitempty"`
}

// GetFenced returns an entry, the fence it was last written with (0 when a
// non-fenced writer wrote it last) and its revision.
func (l *Ledger) GetFenced(ctx context.Context, key string) (Entry, uint64, uint64, error) {
	kve, err := l.getRaw(ctx, key)
	if err != nil {
		return Entry{}, 0, 0, err
	}
	return decodeFenced(key, kve)
}

// getRaw reads an entry without decoding it.
func (l *Ledger) getRaw(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kve, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("ledger get %s: %w", key, err)
	}
	return kve, nil
}

func decodeFenced(key string, kve jetstream.KeyValueEntry) (Entry, uint64, uint64, error) {
	var f fenced
	if err := json.Unmarshal(kve.Value(), &f); err != nil {
		return Entry{}, 0, 0, fmt.Errorf("ledger decode %s: %w", key, err)
	}
	return f.Entry, f.Fence, kve.Revision(), nil
}
