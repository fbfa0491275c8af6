package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// Change is one entry as a Follower delivers it: the entry now stored under
// Key at stream sequence Seq, or Deleted when the person was deleted or
// purged. A retired (merged) entry comes with Entry.MergedInto set: the
// person no longer lives under Key.
type Change struct {
	Key     string
	Seq     uint64
	Entry   optout.Entry
	Deleted bool
}

// Follower reads every tenant's entries and then every change as it is
// stored, for a read model kept in memory (the admin service's suppression
// index). Like Scan it pulls through an ordered consumer (last value per key
// first), so memory stays flat during the initial read whatever the
// ledger's size; unlike Scan it never ends, and says how far it has got
// (Current).
type Follower struct {
	l       *Ledger
	cons    jetstream.Consumer
	stream  jetstream.Stream
	applied atomic.Uint64
}

// Follow creates the consumer of a Follower; Run then delivers.
func (l *Ledger) Follow(ctx context.Context) (*Follower, error) {
	stream := "KV_" + l.kv.Bucket()
	cctx, cancel := context.WithTimeout(ctx, ScanSetupTimeout)
	defer cancel()
	s, err := l.js.Stream(cctx, stream)
	if err != nil {
		return nil, fmt.Errorf("ledger follow: %w", err)
	}
	// Creating it makes the server find the last value of every key: seconds
	// for millions of keys, past the client's default request timeout.
	cons, err := l.js.OrderedConsumer(cctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$KV." + l.kv.Bucket() + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger follow: %w", err)
	}
	return &Follower{l: l, cons: cons, stream: s}, nil
}

// Run passes each entry, then each change, to fn in stream order until ctx
// ends (returning ctx's error) or the consumer fails. An entry that cannot
// be decoded goes to bad (when non-nil) instead, so one corrupt value never
// stops the others; fn is not told of it, so a read model keeps what it had.
func (f *Follower) Run(ctx context.Context, fn func(Change), bad func(key string, err error)) error {
	prefix := "$KV." + f.l.kv.Bucket() + "."
	defer natsx.DeleteOrdered(ctx, f.l.js, "KV_"+f.l.kv.Bucket(), f.cons)
	it, err := f.cons.Messages(jetstream.PullMaxMessages(scanBatch))
	if err != nil {
		return fmt.Errorf("ledger follow: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("ledger follow: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("ledger follow: %w", err)
		}
		key := strings.TrimPrefix(msg.Subject(), prefix)
		c := Change{Key: key, Seq: md.Sequence.Stream}
		switch msg.Headers().Get("KV-Operation") {
		case "DEL", "PURGE":
			c.Deleted = true
			fn(c)
		default:
			var s stored
			if err := json.Unmarshal(msg.Data(), &s); err != nil {
				if bad != nil {
					bad(key, err)
				}
			} else {
				c.Entry = s.Entry
				fn(c)
			}
		}
		f.applied.Store(c.Seq)
	}
}

// Current reports whether every change the ledger had stored when Current
// was called has been passed to Run's fn (which has returned). A caller
// that notes the time before calling knows its read model reflects every
// write acknowledged before then.
func (f *Follower) Current(ctx context.Context) (bool, error) {
	si, err := f.stream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("ledger follow: %w", err)
	}
	target := si.State.LastSeq
	if f.applied.Load() >= target {
		return true, nil
	}
	// The stream's last sequence may be one no consumer delivers (a purged
	// delete marker); the consumer's own count then says it is through.
	ci, err := f.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("ledger follow: %w", err)
	}
	if ci.NumPending == 0 && ci.Delivered.Stream < target {
		target = ci.Delivered.Stream
	}
	return f.applied.Load() >= target, nil
}

// Applied is the stream sequence of the last change Run passed on.
func (f *Follower) Applied() uint64 { return f.applied.Load() }
