package push

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/ledger"
)

type jetstreamMsg = jetstream.Msg

// sweep re-queues the tenant's dirty persons from the ledger's dirty set
// (what another replica ingested, or this one held before a restart) every
// SweepInterval, and from the whole ledger every ResyncInterval (a marker
// lost between a write and its put), as a controller resyncs.
func (r *runner) sweep(ctx context.Context) {
	s := r.svc
	lastResync := time.Time{}
	for ctx.Err() == nil {
		if time.Since(lastResync) >= s.Cfg.ResyncInterval {
			r.resync(ctx)
			lastResync = time.Now()
		}
		err := s.Ledger.Dirty(ctx, r.tenant, func(d ledger.DirtyItem) {
			r.q.AddAfter(d.Key, d.NextAttempt.Sub(s.Now()))
		})
		if err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("sweeping the dirty set failed; retrying")
		}
		sleep(ctx, s.Cfg.SweepInterval)
	}
}

func (r *runner) resync(ctx context.Context) {
	s := r.svc
	field := s.settings(r.tenant).TargetField()
	err := s.Ledger.Scan(ctx, r.tenant, func(it ledger.ScanItem) error {
		if it.Entry.Dirty(field) {
			return s.Ledger.MarkDirtyIfNeeded(ctx, it.Key, it.Entry, field)
		}
		return nil
	}, func(key string, err error) {
		r.log.Error().Str("key", key).Err(err).Msg("undecodable ledger entry")
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Msg("resyncing the ledger failed")
	}
}
