package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// floorNamespace keeps the floor's streams and buckets apart from the
// pusher's on the same server.
const floorNamespace = "floor"

// floorChunk is how many events one step of the floor consumer writes
// together; floorSteps steps run at once, so writes are pipelined as deep
// as the pusher's workers could pipeline them.
const (
	floorChunk = 250
	floorSteps = 8
)

// floorResult is the design floor: the drain of a consumer that does only
// the broker work the design's ledger rules require of every opt-out, and
// nothing else (no decode, no fold, no Salesforce).
type floorResult struct {
	// audit is false for the floor without the audit stream, which
	// docs/architecture.md#the-audit-trail requires: what the ledger writes
	// alone would allow.
	audit      bool
	n          int
	entryBytes int
	drain      time.Duration
	cpu        []cpuUse
	err        error
}

func (f floorResult) label() string {
	if f.audit {
		return ""
	}
	return " without the audit stream"
}

func (f floorResult) rate() float64 {
	if f.drain <= 0 {
		return 0
	}
	return float64(f.n) / f.drain.Seconds()
}

// runFloor publishes items (through the publisher process, as the burst)
// into a topology of its own on e's server, with the production streams
// and buckets (file storage, the audit stream sourcing the ledger), and
// drains them with floorConsume. The pusher is idle meanwhile: it reads
// only its own namespace. Without audit, the audit stream is deleted first.
func runFloor(ctx context.Context, e *env, items []PubItem, entryBytes int, audit bool) floorResult {
	res := floorResult{audit: audit, n: len(items), entryBytes: entryBytes}
	topo := natsx.DefaultTopology()
	topo.Namespace = floorNamespace
	prov, err := natsx.Provision(ctx, e.nc, topo)
	if err != nil {
		res.err = err
		return res
	}
	defer func() { _ = natsx.Teardown(context.WithoutCancel(ctx), e.nc, topo) }()
	if !audit {
		if err := prov.JS.DeleteStream(ctx, topo.AuditStream()); err != nil {
			res.err = err
			return res
		}
	}
	c, err := eventstream.EnsurePusherConsumer(ctx, prov.JS, topo)
	if err != nil {
		res.err = err
		return res
	}
	// Room for every step's writes at once: nats.go's default (4,000
	// unacknowledged) would stall deeper pipelines.
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(floorChunk*floorSteps))
	if err != nil {
		res.err = err
		return res
	}
	cpu := startCPU(map[string]int{"nats-server": e.nats.Pid(), "floor consumer (bench process)": os.Getpid()})
	done := make(chan error, 1)
	var last atomic.Int64
	go func() { done <- floorConsume(ctx, js, c, topo.LedgerBucket(), len(items), entryBytes, &last) }()
	pub, pubCPU, err := e.publishTo(ctx, "floor", floorNamespace, items, 0)
	if err != nil {
		res.err = err
		return res
	}
	if res.err = <-done; res.err != nil {
		return res
	}
	res.cpu = cpu.end([]string{"nats-server", "floor consumer (bench process)"})
	res.cpu = append(res.cpu, cpuUse{Name: "publisher", CPU: pubCPU, Cores: pubCPU.Seconds() / time.Since(cpu.start).Seconds()})
	res.drain = time.Unix(0, last.Load()).Sub(pub.Start)
	return res
}

// floorConsume drains n events from c doing, for each, what the ledger
// rules of docs/architecture.md#the-ledger make the broker do at the least:
// write the person's entry before the ack (a compare-and-set create), update
// it once the push is confirmed (a compare-and-set on the revision written),
// each write copied by the server to the audit stream, and ack the event.
// Writes are asynchronous publishes with the expected last subject sequence,
// so nothing waits for a round trip it does not need. last is set to the
// time the final ack was flushed.
func floorConsume(ctx context.Context, js jetstream.JetStream, c jetstream.Consumer, bucket string, n, entryBytes int, last *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	it, err := c.Messages(jetstream.PullMaxMessages(2 * floorChunk * floorSteps))
	if err != nil {
		return err
	}
	defer it.Stop()
	// Next takes no context: a failed step stops the iterator instead.
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	entry := make([]byte, entryBytes)
	for i := range entry {
		entry[i] = 'x'
	}
	chunks := make(chan []jetstream.Msg)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	var settled atomic.Int64
	for range floorSteps {
		wg.Go(func() {
			for chunk := range chunks {
				if err := floorStep(ctx, js, bucket, chunk, entry); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				settled.Add(int64(len(chunk)))
			}
		})
	}
	var chunk []jetstream.Msg
	var nextErr error
	for got := 0; got < n && ctx.Err() == nil; {
		m, err := it.Next()
		if err != nil {
			nextErr = err
			break
		}
		got++
		chunk = append(chunk, m)
		// A chunk goes when full, or with the last event: in a burst the
		// events arrive faster than a step writes them.
		if len(chunk) == floorChunk || got == n {
			select {
			case chunks <- chunk:
			case <-ctx.Done():
			}
			chunk = nil
		}
	}
	close(chunks)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("floor: %d of %d events settled: %w", settled.Load(), n, err)
	}
	if got := settled.Load(); got != int64(n) {
		return fmt.Errorf("floor: %d of %d events settled: next: %w", got, n, nextErr)
	}
	if err := js.Conn().Flush(); err != nil {
		return err
	}
	last.Store(time.Now().UnixNano())
	return nil
}

// floorStep writes each event's person twice (create, then update at the
// create's sequence) and acks the events.
func floorStep(ctx context.Context, js jetstream.JetStream, bucket string, chunk []jetstream.Msg, entry []byte) error {
	subjects := make([]string, len(chunk))
	for i, m := range chunk {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		// One person per event, as in the burst: the stream sequence names it.
		subjects[i] = "$KV." + bucket + "." + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	seqs := make([]uint64, len(chunk))
	for round := range 2 {
		futures := make([]jetstream.PubAckFuture, len(chunk))
		for i, subj := range subjects {
			msg := nats.NewMsg(subj)
			msg.Data = entry
			f, err := js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(seqs[i]))
			if err != nil {
				return fmt.Errorf("floor write %d: %w", round, err)
			}
			futures[i] = f
		}
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				seqs[i] = ack.Sequence
			case err := <-f.Err():
				return fmt.Errorf("floor write %d of %s: %w", round, subjects[i], err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	for _, m := range chunk {
		if err := m.Ack(); err != nil {
			return err
		}
	}
	return nil
}

// entrySize is the stored size of a burst person's ledger entry, what the
// floor writes.
func entrySize(ctx context.Context, e *env, it PubItem) (int, error) {
	key := optout.Key(it.Tenant, it.salesConnectID(), it.ID)
	kv, err := e.prov.Ledger.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("ledger entry %s: %w", key, err)
	}
	return len(kv.Value()), nil
}
