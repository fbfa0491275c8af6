package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// Errors.
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("runs: not found")
	// ErrFenced: the write carries a fencing token older than the tenant's
	// newest; the writer lost its lease and must stop.
	ErrFenced = errors.New("runs: write refused: a newer lease holder exists")
)

// Key builders. Tenant ids and run ids are single KV tokens.
func KeyReport(tenant, runID string) string { return "run." + tenant + "." + runID }
func KeyActive(tenant string) string        { return "active." + tenant }
func KeyFence(tenant string) string         { return "fence." + tenant }
func KeySlot(tenant string) string          { return "slot." + tenant }
func KeyLast(tenant string) string          { return "last." + tenant }
func KeyMark(tenant string) string          { return "mark." + tenant }

// Store reads and writes the runs bucket. Writes that belong to a run
// carry its fence and are refused (ErrFenced) once a newer holder raised
// the tenant's fence.
type Store struct {
	KV  jetstream.KeyValue
	Now func() time.Time
}

func (s Store) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func checkTenant(tenant string) error {
	if !event.ValidTenant(tenant) {
		return fmt.Errorf("runs: invalid tenant id %q", tenant)
	}
	return nil
}

func validRunID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return event.ValidTenant(id) // the same token rule
}

// get decodes key into v and returns its revision; ErrNotFound when absent.
func (s Store) get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := s.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("runs get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("runs decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// update runs the compare-and-set loop on key: fn sees the current value
// (exists false when absent) and returns whether to write.
func update[T any](ctx context.Context, s Store, key string, fn func(cur *T, exists bool) (bool, error)) error {
	_, _, err := kv.UpdateJSON(ctx, s.KV, key, fn)
	return err
}

// RaiseFence records fence as the tenant's newest. It is refused with
// ErrFenced when a newer fence is already recorded; raising to the current
// value again is a no-op.
func (s Store) RaiseFence(ctx context.Context, tenant string, fence uint64, runID, holder string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	return update(ctx, s, KeyFence(tenant), func(cur *FenceRecord, exists bool) (bool, error) {
		if exists && cur.Fence > fence {
			return false, fmt.Errorf("%w (tenant %s: newest fence %d, ours %d)", ErrFenced, tenant, cur.Fence, fence)
		}
		if exists && cur.Fence == fence && cur.RunID == runID {
			return false, nil
		}
		*cur = FenceRecord{Fence: fence, RunID: runID, Holder: holder, At: s.now()}
		return true, nil
	})
}

// Fence returns the tenant's newest fence (a zero record when none).
func (s Store) Fence(ctx context.Context, tenant string) (FenceRecord, error) {
	var r FenceRecord
	if _, err := s.get(ctx, KeyFence(tenant), &r); err != nil && !errors.Is(err, ErrNotFound) {
		return FenceRecord{}, err
	}
	return r, nil
}

// CheckFence returns ErrFenced unless fence is the tenant's newest. A
// holder calls it before each batch of commits.
func (s Store) CheckFence(ctx context.Context, tenant string, fence uint64) error {
	r, err := s.Fence(ctx, tenant)
	if err != nil {
		return err
	}
	if r.Fence != fence {
		return fmt.Errorf("%w (tenant %s: newest fence %d, ours %d)", ErrFenced, tenant, r.Fence, fence)
	}
	return nil
}

// Active returns the tenant's unfinished run; ErrNotFound when none.
func (s Store) Active(ctx context.Context, tenant string) (Checkpoint, error) {
	var cp Checkpoint
	_, err := s.get(ctx, KeyActive(tenant), &cp)
	return cp, err
}

// SaveCheckpoint writes the progress of a run. It is refused with
// ErrFenced when the tenant's newest fence is not the checkpoint's, or the
// stored checkpoint was written with a newer fence.
func (s Store) SaveCheckpoint(ctx context.Context, cp Checkpoint) error {
	r := cp.Report
	if err := checkTenant(r.Tenant); err != nil {
		return err
	}
	if err := s.CheckFence(ctx, r.Tenant, r.Fence); err != nil {
		return err
	}
	cp.UpdatedAt = s.now()
	return update(ctx, s, KeyActive(r.Tenant), func(cur *Checkpoint, exists bool) (bool, error) {
		if exists && cur.Report.Fence > r.Fence {
			return false, fmt.Errorf("%w (checkpoint of %s written with fence %d, ours %d)", ErrFenced, r.Tenant, cur.Report.Fence, r.Fence)
		}
		*cur = cp
		return true, nil
	})
}

// ClearCheckpoint removes the tenant's checkpoint when the run is over;
// refused like SaveCheckpoint.
func (s Store) ClearCheckpoint(ctx context.Context, tenant string, fence uint64) error {
	if err := s.CheckFence(ctx, tenant, fence); err != nil {
		return err
	}
	for attempt := 0; attempt < 50; attempt++ {
		var cur Checkpoint
		rev, err := s.get(ctx, KeyActive(tenant), &cur)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Report.Fence > fence {
			return fmt.Errorf("%w (checkpoint of %s written with fence %d, ours %d)", ErrFenced, tenant, cur.Report.Fence, fence)
		}
		err = s.KV.Delete(ctx, KeyActive(tenant), jetstream.LastRevision(rev))
		if kv.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("runs clear checkpoint %s: %w", tenant, err)
		}
		return nil
	}
	return fmt.Errorf("runs clear checkpoint %s: too many concurrent changes", tenant)
}

// ListActive returns every unfinished run, by tenant.
func (s Store) ListActive(ctx context.Context) ([]Checkpoint, error) {
	keys, err := s.keys(ctx, "active.*")
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, 0, len(keys))
	for _, k := range keys {
		var cp Checkpoint
		if _, err := s.get(ctx, k, &cp); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // finished meanwhile
			}
			return nil, err
		}
		out = append(out, cp)
	}
	return out, nil
}

// SaveReport writes a run's report; refused (ErrFenced) when the tenant's
// newest fence is not the report's or the stored report has a newer one.
func (s Store) SaveReport(ctx context.Context, r Report) error {
	if err := checkTenant(r.Tenant); err != nil {
		return err
	}
	if !validRunID(r.RunID) {
		return fmt.Errorf("runs: invalid run id %q", r.RunID)
	}
	if err := s.CheckFence(ctx, r.Tenant, r.Fence); err != nil {
		return err
	}
	return update(ctx, s, KeyReport(r.Tenant, r.RunID), func(cur *Report, exists bool) (bool, error) {
		if exists && cur.Fence > r.Fence {
			return false, fmt.Errorf("%w (report %s written with fence %d, ours %d)", ErrFenced, r.RunID, cur.Fence, r.Fence)
		}
		*cur = r
		return true, nil
	})
}

// Report returns one run's report.
func (s Store) Report(ctx context.Context, tenant, runID string) (Report, error) {
	var r Report
	_, err := s.get(ctx, KeyReport(tenant, runID), &r)
	return r, err
}

// History returns a tenant's reports, newest first; limit <= 0 means all.
func (s Store) History(ctx context.Context, tenant string, limit int) ([]Report, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	keys, err := s.keys(ctx, "run."+tenant+".*")
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	slices.Reverse(keys) // run ids sort by start time
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]Report, 0, len(keys))
	for _, k := range keys {
		var r Report
		if _, err := s.get(ctx, k, &r); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s Store) keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := s.KV.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("runs list %s: %w", filter, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister stops its watcher itself once the keys are listed; a
	// second Stop can only report that.
	_ = lister.Stop()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("runs list %s: %w", filter, err)
	}
	// Keys written during the listing may be reported twice.
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// ClaimSlot claims the schedule slot for a run: true when slot is newer
// than every slot claimed before, false when it (or a later one) was
// already claimed. Atomic across replicas (compare-and-set), so exactly one
// run starts per tenant per slot.
func (s Store) ClaimSlot(ctx context.Context, tenant string, slot time.Time, runID, holder string) (bool, error) {
	if err := checkTenant(tenant); err != nil {
		return false, err
	}
	claimed := false
	err := update(ctx, s, KeySlot(tenant), func(cur *SlotClaim, exists bool) (bool, error) {
		if exists && !slot.After(cur.Slot) {
			claimed = false
			return false, nil
		}
		*cur = SlotClaim{Slot: slot.UTC(), RunID: runID, Holder: holder, ClaimedAt: s.now()}
		claimed = true
		return true, nil
	})
	return claimed && err == nil, err
}

// Slot returns the newest claimed slot (zero when none).
func (s Store) Slot(ctx context.Context, tenant string) (SlotClaim, error) {
	var c SlotClaim
	if _, err := s.get(ctx, KeySlot(tenant), &c); err != nil && !errors.Is(err, ErrNotFound) {
		return SlotClaim{}, err
	}
	return c, nil
}

// SetLastSuccess records a succeeded run (fenced like SaveReport).
func (s Store) SetLastSuccess(ctx context.Context, tenant string, fence uint64, l LastSuccess) error {
	if err := s.CheckFence(ctx, tenant, fence); err != nil {
		return err
	}
	return update(ctx, s, KeyLast(tenant), func(cur *LastSuccess, exists bool) (bool, error) {
		if exists && cur.FinishedAt.After(l.FinishedAt) {
			return false, nil
		}
		*cur = l
		return true, nil
	})
}

// LastSuccess returns the tenant's last succeeded run; ErrNotFound when none.
func (s Store) LastSuccess(ctx context.Context, tenant string) (LastSuccess, error) {
	var l LastSuccess
	_, err := s.get(ctx, KeyLast(tenant), &l)
	return l, err
}

// SetWatermark records where a complete run read both sides up to (fenced
// like SaveReport). A watermark never moves back: one older on either side
// than the stored one is ignored (a late writer).
func (s Store) SetWatermark(ctx context.Context, tenant string, fence uint64, w Watermark) error {
	if err := s.CheckFence(ctx, tenant, fence); err != nil {
		return err
	}
	w.At = s.now()
	return update(ctx, s, KeyMark(tenant), func(cur *Watermark, exists bool) (bool, error) {
		if exists && cur.Field == w.Field && (cur.Salesforce.After(w.Salesforce) || cur.LedgerSeq > w.LedgerSeq) {
			return false, nil
		}
		*cur = w
		return true, nil
	})
}

// Watermark returns the tenant's watermark; ErrNotFound when no run
// completed (the next run is full).
func (s Store) Watermark(ctx context.Context, tenant string) (Watermark, error) {
	var w Watermark
	_, err := s.get(ctx, KeyMark(tenant), &w)
	return w, err
}

// ListLastSuccess returns every tenant's last success, by tenant.
func (s Store) ListLastSuccess(ctx context.Context) (map[string]LastSuccess, error) {
	keys, err := s.keys(ctx, "last.*")
	if err != nil {
		return nil, err
	}
	out := make(map[string]LastSuccess, len(keys))
	for _, k := range keys {
		var l LastSuccess
		if _, err := s.get(ctx, k, &l); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out[strings.TrimPrefix(k, "last.")] = l
	}
	return out, nil
}

// TenantStatus is everything optoutctl shows for a tenant.
type TenantStatus struct {
	Tenant      string       `json:"tenant"`
	Active      *Checkpoint  `json:"active,omitempty"`
	Last        *Report      `json:"last,omitempty"` // newest report (may be the active run's)
	LastSuccess *LastSuccess `json:"lastSuccess,omitempty"`
	Slot        *SlotClaim   `json:"slot,omitempty"`
	Fence       uint64       `json:"fence"`
	// CDC is the tenant's Change Data Capture stream (nil: never subscribed).
	CDC *CDC `json:"cdc,omitempty"`
	// Watermark is where the next incremental run reads from (nil: the
	// next run is full).
	Watermark *Watermark `json:"watermark,omitempty"`
}

// Status gathers a tenant's status.
func (s Store) Status(ctx context.Context, tenant string) (TenantStatus, error) {
	st := TenantStatus{Tenant: tenant}
	if cp, err := s.Active(ctx, tenant); err == nil {
		st.Active = &cp
	} else if !errors.Is(err, ErrNotFound) {
		return st, err
	}
	hist, err := s.History(ctx, tenant, 1)
	if err != nil {
		return st, err
	}
	if len(hist) > 0 {
		st.Last = &hist[0]
	}
	if l, err := s.LastSuccess(ctx, tenant); err == nil {
		st.LastSuccess = &l
	} else if !errors.Is(err, ErrNotFound) {
		return st, err
	}
	if c, err := s.Slot(ctx, tenant); err != nil {
		return st, err
	} else if !c.Slot.IsZero() {
		st.Slot = &c
	}
	f, err := s.Fence(ctx, tenant)
	if err != nil {
		return st, err
	}
	st.Fence = f.Fence
	if c, err := s.CDC(ctx, tenant); err == nil {
		st.CDC = &c
	} else if !errors.Is(err, ErrNotFound) {
		return st, err
	}
	if w, err := s.Watermark(ctx, tenant); err == nil {
		st.Watermark = &w
	} else if !errors.Is(err, ErrNotFound) {
		return st, err
	}
	return st, nil
}
