package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/kv"
)

// IngestResult is what folding one event did: the person's key, entry and
// revision after the fold, and Mark, the revision of the person's dirty
// marker after it (0: unknown, or clean), which a push starting from the
// fold's entry passes on.
type IngestResult struct {
	Key   string
	Entry optout.Entry
	Rev   uint64
	Mark  uint64
	optout.FoldResult
}

// Ingest folds one event into its person's entry, whatever ids it carries:
// by Sales Connect id when it has one, else through the alias index, else
// under the Salesforce id. The first event that links both ids merges an
// existing Salesforce-only entry into the person and retires it. With Held
// (the caller holds the event unacked until a write leaves the person clean
// or Mark has put the marker) a fold that leaves the person dirty puts no
// marker, so an opt-out pushed at once never touches the dirty set.
func (w *Writer) Ingest(ctx context.Context, in optout.EventInput, opts ...UpdateOption) (IngestResult, error) {
	l, tenant := w.l, w.tenant
	var u update
	for _, o := range opts {
		o(&u)
	}
	key, err := l.resolve(ctx, tenant, in.SalesConnectID, in.SalesforceID)
	if err != nil {
		return IngestResult{}, err
	}
	sfKey := ""
	if in.SalesforceID != "" {
		sfKey = optout.Key(tenant, "", in.SalesforceID)
	}
	if in.SalesConnectID != "" && sfKey != "" {
		// The alias first, then the merge: an event carrying only the
		// Salesforce id either lands before the merge reads its entry, or
		// finds the alias afterwards and merges itself.
		created, err := l.alias(ctx, tenant, in.SalesforceID, key)
		if err != nil {
			return IngestResult{}, err
		}
		if created {
			// No one had linked this Salesforce id: most likely a person we
			// have never seen, so try creating the entry without reading it
			// first (an existing one refuses the create and is read).
			u.known, u.exists = &Snapshot{}, false
		}
		if err := w.merge(ctx, sfKey, key); err != nil {
			return IngestResult{}, err
		}
	}
	var res IngestResult
	r, err := w.update(ctx, key, optout.FoldStep(in, &res.FoldResult), &u)
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest %s into %s: %w", in.ID, r.Key, err)
	}
	res.Key, res.Entry, res.Rev, res.Mark = r.Key, r.Entry, r.Rev, r.Mark
	if r.Key == sfKey && in.SalesConnectID == "" {
		if target, ok, err := l.aliasOf(ctx, tenant, in.SalesforceID); err != nil {
			return IngestResult{}, err
		} else if ok && target != r.Key {
			if err := w.merge(ctx, sfKey, target); err != nil {
				return IngestResult{}, err
			}
			it, err := l.Get(ctx, target, FollowMerges())
			if err != nil {
				return IngestResult{}, err
			}
			res.Key, res.Entry, res.Rev, res.Mark = it.Key, it.Entry, it.Rev, 0
		}
	}
	return res, nil
}

// resolve finds the key of the person an event is about.
func (l *Ledger) resolve(ctx context.Context, tenant, salesConnectID, salesforceID string) (string, error) {
	if salesConnectID != "" {
		return optout.Key(tenant, salesConnectID, ""), nil
	}
	if salesforceID == "" {
		return "", errors.New("ledger: an event needs a Sales Connect id or a Salesforce id")
	}
	if target, ok, err := l.aliasOf(ctx, tenant, salesforceID); err != nil || ok {
		return target, err
	}
	return optout.Key(tenant, "", salesforceID), nil
}

// KeyOf returns the key of the person a Salesforce id is linked to (its
// alias), ok false when no person is.
func (l *Ledger) KeyOf(ctx context.Context, tenant, salesforceID string) (key string, ok bool, err error) {
	return l.aliasOf(ctx, tenant, salesforceID)
}

func aliasKey(tenant, salesforceID string) string { return tenant + "." + salesforceID }

func (l *Ledger) aliasOf(ctx context.Context, tenant, salesforceID string) (string, bool, error) {
	kve, err := l.aliases.Get(ctx, aliasKey(tenant, salesforceID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	return string(kve.Value()), true, nil
}

// alias points a Salesforce id at a person's key, and reports whether it
// created the alias (no person had the id). Create first: a new person's
// alias is one round trip, an existing alias two.
func (l *Ledger) alias(ctx context.Context, tenant, salesforceID, key string) (created bool, err error) {
	_, err = l.aliases.Create(ctx, aliasKey(tenant, salesforceID), []byte(key))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	if cur, ok, err := l.aliasOf(ctx, tenant, salesforceID); err != nil || (ok && cur == key) {
		return false, err
	}
	if _, err := l.aliases.Put(ctx, aliasKey(tenant, salesforceID), []byte(key)); err != nil {
		return false, fmt.Errorf("ledger alias %s: %w", salesforceID, err)
	}
	return false, nil
}

// merge folds the entry under from into the person under into, then
// retires it by compare-and-set on the revision merged; a write to from
// in between makes it merge again (merging is idempotent).
func (w *Writer) merge(ctx context.Context, from, into string) error {
	l := w.l
	if from == into {
		return nil
	}
	for attempt := 0; attempt < 50; attempt++ {
		src, err := l.Get(ctx, from)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if src.Entry.MergedInto != "" {
			return nil
		}
		if _, err := w.update(ctx, into, optout.MergeStep(src.Entry), &update{}); err != nil {
			return fmt.Errorf("merge %s into %s: %w", from, into, err)
		}
		retired, _ := optout.Retire(src.Entry, into)
		retired.Version = src.Entry.Version + 1
		retired.ChangedAt = l.now()
		data, err := json.Marshal(stored{Entry: retired})
		if err != nil {
			return err
		}
		retiredRev, ok, err := kv.Put(ctx, l.kv, from, data, kv.Current{Rev: src.Rev, Exists: true})
		if err != nil {
			return fmt.Errorf("retire %s: %w", from, err)
		}
		if !ok {
			continue
		}
		_, err = l.syncDirty(ctx, from, src.Entry, true, retired, retiredRev, w.field, 0, false)
		return err
	}
	return fmt.Errorf("merge %s into %s: too much contention", from, into)
}
