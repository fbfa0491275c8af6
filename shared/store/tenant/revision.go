package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/optout-sync/optout-sync/shared/store/kv"
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
	prev, cur, err := st.GetRevision(ctx, s.Tenant)
	if err != nil {
		return 0, err
	}
	if cur != rev {
		return 0, ErrChanged
	}
	s.stampSync(prev, rev != 0, st.now())
	data, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	next, ok, err := kv.Put(ctx, st.KV, s.Tenant, data, kv.Current{Rev: rev, Exists: rev != 0})
	if err != nil {
		return 0, fmt.Errorf("store tenant settings %s: %w", s.Tenant, err)
	}
	if !ok {
		return 0, ErrChanged
	}
	return next, nil
}

// Update applies fn to the current settings (the defaults when none are
// stored) and stores the result with compare-and-set, retrying when another
// writer got in between, so two operators never lose each other's change.
func (st Store) Update(ctx context.Context, tenant string, fn func(*Settings) error) (Settings, uint64, error) {
	var (
		s     Settings
		inner error // decoding, fn's or validation's: returned as it is
	)
	r, err := kv.Update(ctx, st.KV, tenant, func(c kv.Current) ([]byte, bool, error) {
		s = Default(tenant)
		if c.Exists {
			if s, inner = decode(tenant, c.Value); inner != nil {
				return nil, false, inner
			}
		}
		prev := s
		if inner = fn(&s); inner != nil {
			return nil, false, inner
		}
		s.Tenant = tenant
		s.stampSync(prev, c.Exists, st.now())
		if err := s.Validate(); err != nil {
			inner = fmt.Errorf("tenant settings: %w", err)
			return nil, false, inner
		}
		data, err := json.Marshal(s)
		return data, true, err
	}, kv.Attempts(11))
	switch {
	case errors.Is(err, kv.ErrContention):
		return Settings{}, 0, ErrChanged
	case err != nil && err == inner:
		return Settings{}, 0, err
	case err != nil:
		return Settings{}, 0, fmt.Errorf("tenant settings %s: %w", tenant, err)
	}
	return s, r.Rev, nil
}
