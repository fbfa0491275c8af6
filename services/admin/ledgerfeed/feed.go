// Package ledgerfeed is the admin service's one reader of the whole ledger:
// one ledger.Follower (one ordered consumer, one read of every entry at
// start-up, then each change as it is stored) feeding every read model the
// service keeps in memory, the suppression index and the compliance clock.
//
// Why one: each follower costs a read of the whole ledger at start (minutes
// and a peak of memory at a million entries) and a consumer on the server
// for the process's life; two read models of the same stream need neither
// twice. One reader also gives them one notion of "current" (Sink.MarkCurrent)
// and one readiness check (Check): the replica is ready once the whole
// ledger is read, so a Service never routes a question to a replica that
// could only answer "unknown".
package ledgerfeed

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Sink is a read model the feed keeps up to date. Apply is called from one
// goroutine, in stream order; MarkCurrent(at) says every change stored
// before at has been applied (first called when the initial read is done).
type Sink interface {
	Apply(ledger.Change)
	MarkCurrent(at time.Time)
}

// Feed follows the ledger for its sinks.
type Feed struct {
	led   *ledger.Ledger
	log   zerolog.Logger
	sinks []Sink
	// follower is the one Run is reading (nil between two).
	follower atomic.Pointer[ledger.Follower]
	// asOf: every change stored before it is applied (Unix nanoseconds; 0
	// until the initial read is done).
	asOf    atomic.Int64
	applied atomic.Int64
}

// New returns a feed of led for sinks; Run feeds them.
func New(led *ledger.Ledger, log zerolog.Logger, sinks ...Sink) *Feed {
	return &Feed{led: led, log: log, sinks: sinks}
}

// currencyEvery is how often the feed asks how far it has got.
const currencyEvery = 200 * time.Millisecond

// Run feeds the sinks until ctx ends: every entry, then every change, and
// several times a second MarkCurrent. A failed follow starts a new one
// after a pause; the sinks keep what they have, and the time they are
// current to stays where it was until the new follower has caught up (its
// initial read brings them up to date: last value per key).
func (f *Feed) Run(ctx context.Context) error {
	go f.watchCurrency(ctx)
	apply := func(c ledger.Change) {
		for _, s := range f.sinks {
			s.Apply(c)
		}
		f.applied.Add(1)
	}
	for ctx.Err() == nil {
		start := time.Now()
		fl, err := f.led.Follow(ctx)
		if err == nil {
			f.follower.Store(fl)
			f.log.Info().Msg("ledger feed: reading the ledger")
			err = fl.Run(ctx, apply, func(key string, err error) {
				f.log.Error().Err(err).Str("key", key).Msg("ledger feed: an undecodable ledger entry is left as it was")
			})
			f.follower.Store(nil)
		}
		if ctx.Err() != nil {
			break
		}
		f.log.Error().Err(err).Dur("after", time.Since(start)).Msg("ledger feed: following the ledger failed; starting again")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (f *Feed) watchCurrency(ctx context.Context) {
	t := time.NewTicker(currencyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fl := f.follower.Load()
		if fl == nil {
			continue
		}
		at := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := fl.Current(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			f.log.Warn().Err(err).Msg("ledger feed: cannot tell how current it is")
		}
		if !ok {
			continue
		}
		if !f.Loaded() {
			// The start-up read decoded every entry: give the garbage back
			// now, before serving, rather than hold the peak for the
			// process's life or have a collection of it stall answers later.
			debug.FreeOSMemory()
			f.log.Info().Int64("changes", f.applied.Load()).Msg("ledger feed: read the whole ledger; ready")
		}
		for _, s := range f.sinks {
			s.MarkCurrent(at)
		}
		f.markCurrent(at)
	}
}

func (f *Feed) markCurrent(at time.Time) {
	n := at.UnixNano()
	for {
		old := f.asOf.Load()
		if n <= old || f.asOf.CompareAndSwap(old, n) {
			return
		}
	}
}

// Loaded reports whether the initial read of the whole ledger is done.
func (f *Feed) Loaded() bool { return f.asOf.Load() != 0 }

// AsOf is the time before which every ledger change has been applied (zero
// until the initial read is done).
func (f *Feed) AsOf() time.Time {
	if n := f.asOf.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// Check is the readiness check: ready once the whole ledger has been read.
// After that a lagging feed stays ready (each read model says how current
// it is in its answers; the NATS check covers a lost connection).
func (f *Feed) Check(context.Context) error {
	if f.Loaded() {
		return nil
	}
	return fmt.Errorf("reading the ledger: %d entries so far", f.applied.Load())
}
