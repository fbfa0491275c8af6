package tenant

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Mode is a tenant's sync state as the pusher last saw it.
type Mode string

const (
	ModeHealthy Mode = "healthy"
	// ModeBackoff: Salesforce keeps failing transiently; the circuit breaker
	// stops pulling for a while instead of burning deliveries.
	ModeBackoff Mode = "backoff"
	// ModePaused: the org's daily API allowance is spent.
	ModePaused Mode = "paused"
	// ModeUnhealthy: the tenant's setup is wrong (field, credentials); an
	// admin must act. Rechecked periodically; resumes by itself when fixed.
	ModeUnhealthy Mode = "unhealthy"
)

// Health is published per tenant to the health bucket for admins.
type Health struct {
	Tenant string    `json:"tenant"`
	Mode   Mode      `json:"mode"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"` // when pulling resumes (backoff, paused)
}

// HealthStore writes tenant health where optoutctl and the admin page read it.
type HealthStore struct {
	KV jetstream.KeyValue
}

// Put records h; a failure to record is not a reason to stop pushing.
func (s HealthStore) Put(ctx context.Context, h Health) error {
	if s.KV == nil {
		return nil
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = s.KV.Put(ctx, h.Tenant, data)
	return err
}

// Get reads a tenant's last recorded health.
func (s HealthStore) Get(ctx context.Context, tenant string) (Health, error) {
	e, err := s.KV.Get(ctx, tenant)
	if err != nil {
		return Health{}, err
	}
	var h Health
	err = json.Unmarshal(e.Value(), &h)
	return h, err
}
