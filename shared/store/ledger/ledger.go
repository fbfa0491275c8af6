// Package ledger stores what optout-sync knows of each person's opt-out
// (shared/domain/optout): one JetStream KV entry per person per tenant, changed
// only by applying one of the domain's steps inside a compare-and-set loop
// (Writer.Update). The audit stream sources the ledger's own stream
// server-side, so every change has its audit record and the two cannot
// diverge.
//
// The API is small on purpose: Get reads, a Writer changes (Update,
// Ingest) and keeps the dirty set (Mark, Forget), Scan and Dirty list.
// What differs between writers (a snapshot to start from, a held event, a
// fence) is an option, not another method.
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// Ledger reads entries and hands out writers. Beside the entries it keeps
// two indexes in their own buckets: aliases (a Salesforce id, or a
// converted Lead, to its person's key) and the dirty set (the persons
// whose Salesforce value is not yet what they want: the push's
// cluster-wide work list, swept periodically), which leaves out a person
// while a writer holds an unacked event of theirs (Held).
type Ledger struct {
	kv, dirty, aliases jetstream.KeyValue
	js                 jetstream.JetStream
	topo               natsx.Topology
	// Now is the clock of ChangedAt stamps (tests set it).
	Now func() time.Time
}

// ErrNotFound is returned by Get for an unknown person.
var ErrNotFound = errors.New("ledger: no entry")

// New opens the ledger of a provisioned topology. It refuses a topology
// whose audit stream does not source the ledger's stream, so the audit
// trail cannot be switched off by a missing field.
func New(ctx context.Context, p *natsx.Provisioned) (*Ledger, error) {
	if p == nil || p.Ledger == nil || p.Dirty == nil || p.Aliases == nil || p.JS == nil {
		return nil, errors.New("ledger: the ledger, dirty and alias buckets and a JetStream handle are required")
	}
	s, err := p.JS.Stream(ctx, p.Topology.AuditStream())
	if err != nil {
		return nil, fmt.Errorf("ledger: audit stream %s: %w", p.Topology.AuditStream(), err)
	}
	want := "KV_" + p.Topology.LedgerBucket()
	sourced := false
	for _, src := range s.CachedInfo().Config.Sources {
		if src != nil && src.Name == want {
			sourced = true
		}
	}
	if !sourced {
		return nil, fmt.Errorf("ledger: audit stream %s does not source %s: the audit trail would miss changes", p.Topology.AuditStream(), want)
	}
	return &Ledger{kv: p.Ledger, dirty: p.Dirty, aliases: p.Aliases, js: p.JS, topo: p.Topology}, nil
}

func (l *Ledger) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}

// Item is an entry as stored: under Key, at revision Rev, last written by
// a fenced writer holding Fence (0 when a writer without one wrote it).
type Item struct {
	Key   string
	Entry optout.Entry
	Rev   uint64
	Fence uint64
}

// ReadOption changes a Get.
type ReadOption func(*readOptions)

type readOptions struct{ follow, alias bool }

// FollowMerges reads the person a retired (merged) entry now lives under;
// Item.Key is then that entry's key.
func FollowMerges() ReadOption { return func(o *readOptions) { o.follow = true } }

// ViaAlias reads a Salesforce-id key (optout.Key(tenant, "", id)) through
// the alias index: the person the id is linked to, when it is (a Change
// Data Capture event names records by Salesforce id only).
func ViaAlias() ReadOption { return func(o *readOptions) { o.alias = true } }

// Get returns the entry under key as stored (a retired one too, unless
// FollowMerges); ErrNotFound when there is none.
func (l *Ledger) Get(ctx context.Context, key string, opts ...ReadOption) (Item, error) {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.alias {
		if tenant, id, ok := strings.Cut(key, ".sf."); ok {
			target, found, err := l.aliasOf(ctx, tenant, id)
			if err != nil {
				return Item{Key: key}, err
			}
			if found {
				key = target
			}
		}
	}
	for range 4 {
		c, err := kv.Get(ctx, l.kv, key)
		if err != nil {
			return Item{Key: key}, fmt.Errorf("ledger get: %w", err)
		}
		if !c.Exists {
			return Item{Key: key}, ErrNotFound
		}
		it, err := decode(key, c)
		if err != nil || !o.follow || it.Entry.MergedInto == "" {
			return it, err
		}
		key = it.Entry.MergedInto
	}
	return Item{}, fmt.Errorf("ledger: %s: merge chain too long", key)
}

// stored is an entry as stored: the Entry's fields plus the fence of the
// fenced writer that last changed it. Writers that do not fence (ingest and
// the push) write no stamp, which resets it to 0; the fence only orders
// fenced writers among themselves, and every fenced write still goes
// through compare-and-set against whatever the pusher wrote.
type stored struct {
	optout.Entry
	Fence uint64 `json:"reconcileFence,omitempty"`
}

func decode(key string, c kv.Current) (Item, error) {
	var s stored
	if err := json.Unmarshal(c.Value, &s); err != nil {
		return Item{Key: key}, fmt.Errorf("ledger decode %s: %w", key, err)
	}
	return Item{Key: key, Entry: s.Entry, Rev: c.Rev, Fence: s.Fence}, nil
}
