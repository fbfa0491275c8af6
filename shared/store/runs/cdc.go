package runs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// KeyCDC is the tenant's Change Data Capture record: where its stream
// stands (the replay id after the last applied batch) and what admins see.
func KeyCDC(tenant string) string { return "cdc." + tenant }

// CDCState is the state of a tenant's Change Data Capture stream.
type CDCState string

// CDC states.
const (
	// CDCStreaming: subscribed; Salesforce-side changes arrive in seconds.
	CDCStreaming CDCState = "streaming"
	// CDCStalled: the stream went silent past its watchdog, or failed and is
	// being resubscribed; a reconcile was requested.
	CDCStalled CDCState = "stalled"
	// CDCFallback: no stream (CDC not enabled for the org, the delivered-event
	// allocation spent, a setup problem): the nightly run keeps the tenant in
	// step; Reason says why, Until when the subscriber tries again.
	CDCFallback CDCState = "fallback"
)

// CDC is a tenant's Change Data Capture record. Every write carries the
// CDC lease's fence (its own counter, not the nightly run's): a replica
// that lost the lease can neither move the replay id nor overwrite the
// status.
type CDC struct {
	Tenant string   `json:"tenant"`
	State  CDCState `json:"state"`
	// Reason is admin-readable: why the tenant is stalled or in fallback,
	// and what happens next.
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"` // fallback: next attempt
	Topic  string    `json:"topic,omitempty"`
	// ReplayID is where the stream resumes: the position reached by the
	// last batch whose changes were all applied (spec §9.10).
	ReplayID []byte    `json:"replayId,omitempty"`
	Fence    uint64    `json:"fence"`
	Holder   string    `json:"holder,omitempty"`
	LastAt   time.Time `json:"lastEventAt,omitzero"` // the last event applied
	// Delivered counts delivered events per hour (Unix hour → events) over
	// the last 24 h: the tenant's share of the org's allocation.
	Delivered map[int64]int64 `json:"delivered,omitempty"`
	// Allocation is the org's delivered-event allocation per 24 h (from
	// GET /limits, else the configured default); UsedRatio the share used
	// (the org's own count when it answers, else ours).
	Allocation int64   `json:"allocation,omitempty"`
	UsedRatio  float64 `json:"usedRatio"`
	// Applied counts changes applied to Sales Connect from the stream.
	Applied int64 `json:"applied"`
	// Reconcile is the last reconcile the subscriber asked for, and why.
	Reconcile *CDCReconcile `json:"reconcile,omitempty"`
}

// CDCReconcile is a reconcile the subscriber requested.
type CDCReconcile struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	RunID  string    `json:"runId,omitempty"`
	// Refused says why the reconciler did not start it (a run in progress
	// covers it; a failure to ask is retried at the next occasion).
	Refused string `json:"refused,omitempty"`
}

// Delivered24h sums the hourly counts of the 24 h up to now.
func (c *CDC) Delivered24h(now time.Time) int64 {
	var n int64
	from := now.Unix()/3600 - 23
	for h, v := range c.Delivered {
		if h >= from {
			n += v
		}
	}
	return n
}

// CountDelivered adds n delivered events at now and drops hours older than
// 24 h.
func (c *CDC) CountDelivered(now time.Time, n int64) {
	if c.Delivered == nil {
		c.Delivered = map[int64]int64{}
	}
	h := now.Unix() / 3600
	c.Delivered[h] += n
	for k := range c.Delivered {
		if k < h-23 {
			delete(c.Delivered, k)
		}
	}
}

// CDC returns the tenant's record; ErrNotFound when it has none.
func (s Store) CDC(ctx context.Context, tenant string) (CDC, error) {
	var c CDC
	_, err := s.get(ctx, KeyCDC(tenant), &c)
	return c, err
}

// UpdateCDC changes the tenant's record under the CDC lease's fence: fn
// sees the current record (zero when none) and returns whether to write. A
// record written under a newer fence refuses the update with ErrFenced;
// the record takes fence.
func (s Store) UpdateCDC(ctx context.Context, tenant string, fence uint64, fn func(c *CDC) bool) (CDC, error) {
	if err := checkTenant(tenant); err != nil {
		return CDC{}, err
	}
	var out CDC
	err := update(ctx, s, KeyCDC(tenant), func(cur *CDC, exists bool) (bool, error) {
		if exists && cur.Fence > fence {
			return false, fmt.Errorf("%w (tenant %s CDC: newest fence %d, ours %d)", ErrFenced, tenant, cur.Fence, fence)
		}
		cur.Tenant = tenant
		write := fn(cur) || cur.Fence != fence
		cur.Fence = fence
		out = *cur
		return write, nil
	})
	return out, err
}

// CheckCDCFence returns ErrFenced when a newer CDC lease holder wrote the
// tenant's record.
func (s Store) CheckCDCFence(ctx context.Context, tenant string, fence uint64) error {
	c, err := s.CDC(ctx, tenant)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Fence > fence {
		return fmt.Errorf("%w (tenant %s CDC: newest fence %d, ours %d)", ErrFenced, tenant, c.Fence, fence)
	}
	return nil
}
