package push

import (
	"context"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// scanConcurrency bounds the ledger scans and dirty-set watches of runners
// catching up at once: each is a consumer on the server, and a replica
// starting with a thousand tenants must not open a thousand together.
const scanConcurrency = 4

// sweep re-queues dirty persons from the ledger's dirty set (what another
// replica ingested, or this one held before a restart) every
// SweepInterval, with one watch over every tenant's markers, and resyncs
// each tenant's whole ledger every ResyncInterval (a marker lost between a
// write and its put), as a controller resyncs.
func (s *Service) sweep(ctx context.Context) {
	for {
		sleep(ctx, s.Cfg.SweepInterval)
		if ctx.Err() != nil {
			return
		}
		for _, r := range s.runnerList() {
			if time.Since(time.Unix(0, r.resyncedAt.Load())) >= s.Cfg.ResyncInterval {
				r.withScanSlot(ctx, r.resync)
			}
		}
		err := s.Ledger.Dirty(ctx, "", func(d ledger.DirtyItem) {
			t, _, _ := strings.Cut(d.Key, ".")
			s.ensureRunner(ctx, t).swept(d)
		})
		if err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Msg("sweeping the dirty set failed; retrying")
		}
	}
}

func (s *Service) runnerList() []*runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*runner, 0, len(s.runners))
	for _, r := range s.runners {
		out = append(out, r)
	}
	return out
}

// catchUp is a new runner's first resync and sweep, so a restarted
// replica pushes what was dirty without waiting for the periodic sweep.
func (r *runner) catchUp(ctx context.Context) {
	r.withScanSlot(ctx, func(ctx context.Context) {
		r.resync(ctx)
		err := r.svc.Ledger.Dirty(ctx, r.tenant, r.swept)
		if err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("sweeping the dirty set failed; the periodic sweep retries")
		}
	})
}

func (r *runner) withScanSlot(ctx context.Context, fn func(context.Context)) {
	select {
	case r.svc.scans <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-r.svc.scans }()
	fn(ctx)
}

// swept queues a person found in the dirty set, once its next attempt is
// due. A person already waiting or in a batch is left alone: every path
// of a batch settles or re-queues its persons itself.
func (r *runner) swept(d ledger.DirtyItem) {
	r.q.AddIfIdleAfter(d.Key, d.NextAttempt.Sub(r.svc.Now()))
}

func (r *runner) resync(ctx context.Context) {
	s := r.svc
	r.resyncedAt.Store(time.Now().UnixNano())
	w := s.Ledger.Writer(r.tenant, s.settings(r.tenant).TargetField())
	err := s.Ledger.Scan(ctx, r.tenant, func(it ledger.ScanItem) error {
		return w.Mark(ctx, it.Key, &it.Entry)
	}, func(key string, err error) {
		r.log.Error().Str("key", key).Err(err).Msg("undecodable ledger entry")
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Msg("resyncing the ledger failed")
	}
}
