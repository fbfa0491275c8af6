package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ScanTimeout bounds a watch-based Scan whose context has no deadline;
// ScanSetupTimeout bounds the creation of a pull-based Scan's consumer.
const (
	ScanTimeout      = 6 * time.Hour
	ScanSetupTimeout = 5 * time.Minute
)

// scanBatch is the most entries a pull-based Scan buffers.
const scanBatch = 5000

// ScanItem is one entry as Scan delivers it.
type ScanItem struct {
	Key      string
	Revision uint64
	Entry    Entry
	// Fence is the fence of the fenced writer that wrote it last (0 otherwise).
	Fence uint64
}

// Scan streams the current entry of every person of tenant to fn, one at a
// time in the bucket's storage order, without holding them: a KV watch over
// "<tenant>.>" that stops after the initial values. Deleted entries are
// skipped. An entry that cannot be decoded is passed to bad (when non-nil)
// and skipped, so one corrupt value never hides the others. fn returning an
// error stops the scan with that error.
func (l *Ledger) Scan(ctx context.Context, tenant string, fn func(ScanItem) error, bad func(key string, err error)) error {
	if l.JS != nil {
		return l.scanPull(ctx, tenant, fn, bad)
	}
	return l.scanWatch(ctx, tenant, fn, bad)
}

// scanPull reads the bucket's stream with an ordered pull consumer (last
// value per key), so at most one pull batch is buffered: memory stays flat
// whatever the tenant's size, unlike a watch, whose push subscription may
// buffer up to the client's pending limit (64 MB) ahead of the reader.
func (l *Ledger) scanPull(ctx context.Context, tenant string, fn func(ScanItem) error, bad func(key string, err error)) error {
	prefix := "$KV." + l.KV.Bucket() + "."
	// Creating the consumer makes the server find the last value of every
	// key of the tenant: seconds for millions of keys, more than the
	// client's default 5 s request timeout.
	cctx, cancel := context.WithTimeout(ctx, ScanSetupTimeout)
	defer cancel()
	cons, err := l.JS.OrderedConsumer(cctx, "KV_"+l.KV.Bucket(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + tenant + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("ledger scan %s: %w", tenant, err)
	}
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
		switch msg.Headers().Get("KV-Operation") {
		case "DEL", "PURGE": // a deleted person
		default:
			key := strings.TrimPrefix(msg.Subject(), prefix)
			var f fenced
			if err := json.Unmarshal(msg.Data(), &f); err != nil {
				if bad != nil {
					bad(key, err)
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

// scanWatch is Scan over a KV watch, for a Ledger without a JetStream handle.
func (l *Ledger) scanWatch(ctx context.Context, tenant string, fn func(ScanItem) error, bad func(key string, err error)) error {
	// The watch's context bounds both the consumer's creation and its
	// life. Without a deadline the client allows the creation only its
	// default 5 s, too little for a server counting the last values of
	// millions of keys; a generous deadline serves both.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ScanTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := l.KV.WatchFiltered(ctx, []string{tenant + ".>"}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("ledger scan %s: %w", tenant, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("ledger scan %s: %w", tenant, ctx.Err())
		case kve, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("ledger scan %s: watcher closed before the initial values were read", tenant)
			}
			if kve == nil { // the initial values are all delivered
				return nil
			}
			var f fenced
			if err := json.Unmarshal(kve.Value(), &f); err != nil {
				if bad != nil {
					bad(kve.Key(), err)
				}
				continue
			}
			if err := fn(ScanItem{Key: kve.Key(), Revision: kve.Revision(), Entry: f.Entry, Fence: f.Fence}); err != nil {
				return err
			}
		}
	}
}
