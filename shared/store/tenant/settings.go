// Package tenant holds each tenant's sync settings in a JetStream KV bucket.
// Changes apply without a restart: services keep a watched cache.
// Salesforce credentials are not settings: they come from Secrets, never KV.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// Field is the opt-out field a tenant chose.
type Field string

const (
	// EmailOptOut writes the standard HasOptedOutOfEmail, shared with marketing tools.
	EmailOptOut Field = "EMAIL_OPT_OUT"
	// SalesOptOut writes the tenant's custom sales opt-out field.
	SalesOptOut Field = "SALES_OPT_OUT"
)

// Conflict policies of the nightly reconciler.
const (
	PolicyOptOutWins = "optout-wins"
	PolicyLatestWins = "latest-wins"
)

// Defaults.
const (
	StandardField      = optout.StandardField
	DefaultCustomField = "Marketo_Sales_Opt_Out__c"
	DefaultTime        = "20:00"
	DefaultZone        = "America/Los_Angeles"
)

// Settings are one tenant's choices.
type Settings struct {
	Tenant         string `json:"tenant"`
	SyncEnabled    bool   `json:"syncEnabled"`
	Field          Field  `json:"field"`
	CustomField    string `json:"customField"`
	ScheduleTime   string `json:"scheduleTime"` // HH:MM in ScheduleZone
	ScheduleZone   string `json:"scheduleZone"`
	ConflictPolicy string `json:"conflictPolicy"`
	// SyncSince is when sync was last turned on (set by Update and
	// PutIfRevision, the writes of optoutctl and the admin page; zero while
	// sync is off, and for settings stored before it was recorded). The
	// nightly schedule never catches up a slot from before it: the first
	// run is the next slot, unless an admin asks for one now.
	SyncSince time.Time `json:"syncSince,omitzero"`
	// CDCEnabled streams Salesforce-side changes in seconds (Change Data
	// Capture over the Pub/Sub API) besides the nightly run; CDCTopic is the
	// topic or custom channel (default DefaultCDCTopic).
	CDCEnabled bool   `json:"cdcEnabled,omitempty"`
	CDCTopic   string `json:"cdcTopic,omitempty"`
	// DuplicatesByEmail applies each opt-out to every Lead and Contact with
	// the same email address (real orgs hold duplicates), each recorded as a
	// person of its own (shared/flow/dupes); off by default.
	DuplicatesByEmail bool `json:"duplicatesByEmail,omitempty"`
}

// stampSync carries SyncSince over from the stored settings prev (existed:
// any were stored): set to now when this write turns sync on, kept while
// sync stays on, cleared when it goes off.
func (s *Settings) stampSync(prev Settings, existed bool, now time.Time) {
	switch {
	case !s.SyncEnabled:
		s.SyncSince = time.Time{}
	case existed && prev.SyncEnabled:
		s.SyncSince = prev.SyncSince
	default:
		s.SyncSince = now.UTC().Truncate(time.Second)
	}
}

// DefaultCDCTopic carries the changes of every entity selected for CDC
// (Contact and Lead): one stream per tenant (spec §9.5). A filtered custom
// channel (/data/OptOutSync__chn) spends less of the allocation.
const DefaultCDCTopic = "/data/ChangeEvents"

// Topic is the CDC topic the tenant subscribes to.
func (s Settings) Topic() string {
	if s.CDCTopic != "" {
		return s.CDCTopic
	}
	return DefaultCDCTopic
}

// Default returns the settings of a tenant nobody configured: sync off,
// email opt-out field, nightly at 20:00 Los Angeles time.
func Default(tenant string) Settings {
	return Settings{
		Tenant:         tenant,
		Field:          EmailOptOut,
		CustomField:    DefaultCustomField,
		ScheduleTime:   DefaultTime,
		ScheduleZone:   DefaultZone,
		ConflictPolicy: PolicyOptOutWins,
	}
}

// TargetField is the Salesforce field an unsubscribe is written to. With
// sync disabled the unsubscribe is still pushed, to the standard field.
func (s Settings) TargetField() string {
	if s.SyncEnabled && s.Field == SalesOptOut {
		return s.CustomField
	}
	return StandardField
}

var (
	tenantRe      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	customFieldRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*__c$`)
	cdcTopicRe    = regexp.MustCompile(`^/data/(ChangeEvents|[A-Za-z][A-Za-z0-9_]*ChangeEvent|[A-Za-z][A-Za-z0-9_]*__chn)$`)
	clockRe       = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
)

// Validate says what is wrong, field by field.
func (s Settings) Validate() error {
	var errs []error
	if !tenantRe.MatchString(s.Tenant) {
		errs = append(errs, fmt.Errorf("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", s.Tenant))
	}
	if s.Field != EmailOptOut && s.Field != SalesOptOut {
		errs = append(errs, fmt.Errorf("field %q: want %s or %s", s.Field, EmailOptOut, SalesOptOut))
	}
	if !customFieldRe.MatchString(s.CustomField) {
		errs = append(errs, fmt.Errorf("customField %q: want a custom field API name ending in __c", s.CustomField))
	}
	if !clockRe.MatchString(s.ScheduleTime) {
		errs = append(errs, fmt.Errorf("scheduleTime %q: want HH:MM (24 h)", s.ScheduleTime))
	}
	if _, err := time.LoadLocation(s.ScheduleZone); err != nil || s.ScheduleZone == "" {
		errs = append(errs, fmt.Errorf("scheduleZone %q: want an IANA zone such as America/Los_Angeles", s.ScheduleZone))
	}
	if s.ConflictPolicy != PolicyOptOutWins && s.ConflictPolicy != PolicyLatestWins {
		errs = append(errs, fmt.Errorf("conflictPolicy %q: want %s or %s", s.ConflictPolicy, PolicyOptOutWins, PolicyLatestWins))
	}
	if s.CDCTopic != "" && !cdcTopicRe.MatchString(s.CDCTopic) {
		errs = append(errs, fmt.Errorf("cdcTopic %q: want /data/ChangeEvents, /data/<Entity>ChangeEvent or /data/<Name>__chn", s.CDCTopic))
	}
	return errors.Join(errs...)
}

// Store reads and writes settings.
type Store struct {
	KV jetstream.KeyValue
	// Now stamps SyncSince (default time.Now).
	Now func() time.Time
}

func (st Store) now() time.Time {
	if st.Now != nil {
		return st.Now()
	}
	return time.Now()
}

// Get returns a tenant's settings, or the defaults when none are stored.
func (st Store) Get(ctx context.Context, tenant string) (Settings, error) {
	e, err := st.KV.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Default(tenant), nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("tenant settings %s: %w", tenant, err)
	}
	return decode(tenant, e.Value())
}

// Put validates and stores settings as given, SyncSince included (a blind
// write cannot tell whether it turns sync on: the writes of people, which
// stamp it, are Update and PutIfRevision).
func (st Store) Put(ctx context.Context, s Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("tenant settings: %w", err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := st.KV.Put(ctx, s.Tenant, data); err != nil {
		return fmt.Errorf("store tenant settings %s: %w", s.Tenant, err)
	}
	return nil
}

// List returns every stored tenant's settings, sorted by tenant.
func (st Store) List(ctx context.Context) ([]Settings, error) {
	keys, err := st.KV.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	sort.Strings(keys)
	out := make([]Settings, 0, len(keys))
	for _, k := range keys {
		s, err := st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func decode(tenant string, data []byte) (Settings, error) {
	s := Default(tenant)
	if err := json.Unmarshal(data, &s); err != nil {
		return Settings{}, fmt.Errorf("tenant settings %s: %w", tenant, err)
	}
	s.Tenant = tenant
	return s, nil
}

// Cache is a live view of every tenant's settings, kept current by a KV
// watch so a change made by an admin applies to the next opt-out.
type Cache struct {
	mu       sync.RWMutex
	settings map[string]Settings
}

// Watch starts a cache; it returns once the current values are loaded and
// keeps updating until ctx ends.
func Watch(ctx context.Context, kv jetstream.KeyValue) (*Cache, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch tenant settings: %w", err)
	}
	c := &Cache{settings: map[string]Settings{}}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for {
			select {
			case <-ctx.Done():
				if initial {
					close(ready)
				}
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the end of the initial values
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				c.apply(e)
			}
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *Cache) apply(e jetstream.KeyValueEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(c.settings, e.Key())
		return
	}
	if s, err := decode(e.Key(), e.Value()); err == nil {
		c.settings[e.Key()] = s
	}
}

// Get returns the tenant's current settings (defaults when none stored).
func (c *Cache) Get(tenant string) Settings {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s, ok := c.settings[tenant]; ok {
		return s
	}
	return Default(tenant)
}

// Tenants lists the tenants with stored settings.
func (c *Cache) Tenants() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.settings))
	for t := range c.settings {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
