package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// ScanSetupTimeout bounds the creation of a Scan's consumer.
const ScanSetupTimeout = 5 * time.Minute

// scanBatch is the most entries a pull-based Scan buffers.
const scanBatch = 5000

// ScanItem is one entry as Scan delivers it.
type ScanItem struct {
	Key      string
	Revision uint64
	Entry    optout.Entry
	// Fence is the fence of the fenced writer that wrote it last (0 otherwise).
	Fence uint64
	// Gone (Since scans only): the person was deleted or retired (merged)
	// at this revision; Entry is empty.
	Gone bool
}

// ScanOption changes a Scan.
type ScanOption func(*scanOptions)

type scanOptions struct {
	since    uint64
	hasSince bool
}

// Since scans only the changes after position seq of the ledger's stream
// (Position): fn sees them in order, a person possibly more than once
// (the last is current), and deleted or retired persons as Gone items.
// The bucket keeps one revision a key, so a person changed twice since
// is mostly seen once.
func Since(seq uint64) ScanOption {
	return func(o *scanOptions) { o.since, o.hasSince = seq, true }
}

// Position returns the ledger stream's last sequence: every change made
// after this call has a higher one, so a Since(Position) scan started
// later sees it (a position on the ledger's own clock, not ours).
func (l *Ledger) Position(ctx context.Context) (uint64, error) {
	s, err := l.js.Stream(ctx, "KV_"+l.kv.Bucket())
	if err != nil {
		return 0, fmt.Errorf("ledger position: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("ledger position: %w", err)
	}
	return info.State.LastSeq, nil
}

// Scan streams the current entry of every person of tenant to fn, one at a
// time in the bucket's storage order, without holding them. Deleted and
// retired (merged) entries are skipped. An entry that cannot be decoded is passed to bad (when non-nil)
// and skipped, so one corrupt value never hides the others. fn returning an
// error stops the scan with that error.
func (l *Ledger) Scan(ctx context.Context, tenant string, fn func(ScanItem) error, bad func(key string, err error), opts ...ScanOption) error {
	var o scanOptions
	for _, f := range opts {
		f(&o)
	}
	return l.scanPull(ctx, tenant, fn, bad, o)
}

// scanPull reads the bucket's stream with an ordered pull consumer (last
// value per key), so at most one pull batch is buffered: memory stays flat
// whatever the tenant's size, unlike a watch, whose push subscription may
// buffer up to the client's pending limit (64 MB) ahead of the reader.
func (l *Ledger) scanPull(ctx context.Context, tenant string, fn func(ScanItem) error, bad func(key string, err error), o scanOptions) error {
	prefix := "$KV." + l.kv.Bucket() + "."
	// Creating the consumer makes the server find the last value of every
	// key of the tenant: seconds for millions of keys, more than the
	// client's default 5 s request timeout.
	cctx, cancel := context.WithTimeout(ctx, ScanSetupTimeout)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + tenant + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	}
	if o.hasSince {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.since+1
	}
	cons, err := l.js.OrderedConsumer(cctx, "KV_"+l.kv.Bucket(), cfg)
	if err != nil {
		return fmt.Errorf("ledger scan %s: %w", tenant, err)
	}
	// Deleted when the scan ends: left to its inactive threshold (5 min),
	// a replica catching up a thousand tenants filled the bucket's stream
	// with the server's default limit of 1,000 consumers.
	defer natsx.DeleteOrdered(ctx, l.js, "KV_"+l.kv.Bucket(), cons)
	info, err := cons.Info(cctx)
	if err != nil {
		return fmt.Errorf("ledger scan %s: %w", tenant, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(scanBatch))
	if err != nil {
		return fmt.Errorf("ledger scan %s: %w", tenant, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("ledger scan %s: %w", tenant, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("ledger scan %s: %w", tenant, err)
		}
		key := strings.TrimPrefix(msg.Subject(), prefix)
		switch msg.Headers().Get("KV-Operation") {
		case "DEL", "PURGE": // a deleted person
			if o.hasSince {
				if err := fn(ScanItem{Key: key, Revision: md.Sequence.Stream, Gone: true}); err != nil {
					return err
				}
			}
		default:
			var f stored
			if err := json.Unmarshal(msg.Data(), &f); err != nil {
				if bad != nil {
					bad(key, err)
				}
			} else if f.MergedInto != "" {
				// a retired entry: the person lives under MergedInto
				if o.hasSince {
					if err := fn(ScanItem{Key: key, Revision: md.Sequence.Stream, Gone: true}); err != nil {
						return err
					}
				}
			} else if err := fn(ScanItem{Key: key, Revision: md.Sequence.Stream, Entry: f.Entry, Fence: f.Fence}); err != nil {
				return err
			}
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}
