package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrChanged means the settings were changed by someone else after they were
// read; the caller shows the new values and lets the person decide again,
// rather than silently overwriting an admin's choice.
var ErrChanged = errors.New("tenant settings were changed by someone else since they were read")

// GetRevision returns a tenant's settings with the KV revision they were
// read at; revision 0 means none are stored and the defaults are returned.
func (st Store) GetRevision(ctx context.Context, tenant string) (Settings, uint64, error) {
	e, err := st.KV.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Default(tenant), 0, nil
	}
	if err != nil {
		return Settings{}, 0, fmt.Errorf("tenant settings %s: %w", tenant, err)
	}
	s, err := decode(tenant, e.Value())
	return s, e.Revision(), err
}

// PutIfRevision validates and stores s only if the stored revision is still
// rev (0: nothing stored yet). It returns the new revision, or ErrChanged.
func (st Store) PutIfRevision(ctx context.Context, s Settings, rev uint64) (uint64, error) {
	if err := s.Validate(); err != nil {
		return 0, fmt.Errorf("tenant settings: %w", err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	var next uint64
	if rev == 0 {
		next, err = st.KV.Create(ctx, s.Tenant, data)
	} else {
		next, err = st.KV.Update(ctx, s.Tenant, data, rev)
	}
	if isRevisionConflict(err) {
		return 0, ErrChanged
	}
	if err != nil {
		return 0, fmt.Errorf("store tenant settings %s: %w", s.Tenant, err)
	}
	return next, nil
}

// Update applies fn to the current settings (the defaults when none are
// stored) and stores the result with compare-and-set, retrying when another
// writer got in between, so two operators never lose each other's change.
func (st Store) Update(ctx context.Context, tenant string, fn func(*Settings) error) (Settings, uint64, error) {
	for attempt := 0; ; attempt++ {
		s, rev, err := st.GetRevision(ctx, tenant)
		if err != nil {
			return Settings{}, 0, err
		}
		if err := fn(&s); err != nil {
			return Settings{}, 0, err
		}
		s.Tenant = tenant
		next, err := st.PutIfRevision(ctx, s, rev)
		if errors.Is(err, ErrChanged) && attempt < 10 {
			continue
		}
		return s, next, err
	}
}

// isRevisionConflict recognises a lost compare-and-set, including the raw API
// codes older server paths return (10071 wrong last sequence, 10164 clustered).
func isRevisionConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164)
}
