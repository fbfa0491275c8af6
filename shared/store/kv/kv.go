// Package kv is the one compare-and-set loop of the stores kept in
// JetStream KV buckets (the ledger, run records, tenant settings): read a
// value at its revision, compute the next one, write it only if the value
// has not moved since, and read again when it has.
package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Current is a key's value as read, at Rev; Exists false when absent.
type Current struct {
	Value  []byte
	Rev    uint64
	Exists bool
	// Passed: the value is the one passed with From, not read.
	Passed bool
}

// ErrReread, returned by an update's function, asks for the value as
// stored: the function was called on a value the caller passed (From),
// which may be stale, and wants to decide on the stored one.
var ErrReread = errors.New("kv: read the stored value again")

// ErrContention ends an update whose compare-and-set lost too many times.
var ErrContention = errors.New("kv: too much contention")

// Option changes an update.
type Option func(*options)

type options struct {
	from     *Current
	attempts int
}

// From starts the update from a value the caller already holds instead of
// reading it: the compare-and-set on its revision (a create, when it says
// absent) still refuses a value that moved, and the next attempt reads.
func From(c Current) Option { return func(o *options) { o.from = &c } }

// Attempts bounds the compare-and-set attempts (50 by default).
func Attempts(n int) Option { return func(o *options) { o.attempts = n } }

// Result is what an update came to: the value it last saw or wrote, and
// whether it wrote.
type Result struct {
	Current
	Wrote bool
}

// Update runs fn inside a compare-and-set loop on key. fn sees the current
// value and returns the next one and whether to write it; it may be called
// more than once, so it must be pure apart from what it returns.
func Update(ctx context.Context, b jetstream.KeyValue, key string, fn func(Current) ([]byte, bool, error), opts ...Option) (Result, error) {
	o := options{attempts: 50}
	for _, opt := range opts {
		opt(&o)
	}
	for attempt := 0; ; attempt++ {
		var (
			cur Current
			err error
		)
		fromKnown := attempt == 0 && o.from != nil
		if fromKnown {
			cur = *o.from
			cur.Passed = true
		} else if cur, err = Get(ctx, b, key); err != nil {
			return Result{}, err
		}
		next, write, err := fn(cur)
		if errors.Is(err, ErrReread) && fromKnown {
			continue
		}
		if err != nil {
			return Result{Current: cur}, err
		}
		if !write {
			return Result{Current: cur}, nil
		}
		rev, ok, err := Put(ctx, b, key, next, cur)
		if err != nil {
			return Result{}, err
		}
		if ok {
			return Result{Current: Current{Value: next, Rev: rev, Exists: true}, Wrote: true}, nil
		}
		if attempt+1 >= o.attempts {
			return Result{}, fmt.Errorf("write %s: %w", key, ErrContention)
		}
	}
}

// Get reads key; a missing key is Current{Exists: false}, not an error.
func Get(ctx context.Context, b jetstream.KeyValue, key string) (Current, error) {
	e, err := b.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Current{}, nil
	}
	if err != nil {
		return Current{}, fmt.Errorf("read %s: %w", key, err)
	}
	return Current{Value: e.Value(), Rev: e.Revision(), Exists: true}, nil
}

// Put writes data under key if it is still as cur says (an update at
// cur.Rev, or a create when !cur.Exists). ok is false when another writer
// got there first.
func Put(ctx context.Context, b jetstream.KeyValue, key string, data []byte, cur Current) (rev uint64, ok bool, err error) {
	if cur.Exists {
		rev, err = b.Update(ctx, key, data, cur.Rev)
	} else {
		rev, err = b.Create(ctx, key, data)
	}
	if IsConflict(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("write %s: %w", key, err)
	}
	return rev, true, nil
}

// IsConflict recognises a lost compare-and-set: ErrKeyRevisionMismatch from
// Update, ErrKeyExists from a racing Create, and the raw API codes 10071
// (wrong last sequence) and 10164 (clustered) that older paths surface.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164)
}

// UpdateJSON is Update for a value stored as JSON: fn changes cur in
// place (the zero T, or what init sets, when the key is absent) and
// reports whether to write it. It returns the value and revision as
// stored after.
func UpdateJSON[T any](ctx context.Context, b jetstream.KeyValue, key string, fn func(cur *T, exists bool) (bool, error), opts ...Option) (T, uint64, error) {
	var out T
	r, err := Update(ctx, b, key, func(c Current) ([]byte, bool, error) {
		var cur T
		if c.Exists {
			if err := json.Unmarshal(c.Value, &cur); err != nil {
				return nil, false, fmt.Errorf("decode %s: %w", key, err)
			}
		}
		write, err := fn(&cur, c.Exists)
		out = cur
		if err != nil || !write {
			return nil, false, err
		}
		data, err := json.Marshal(&cur)
		if err != nil {
			return nil, false, fmt.Errorf("encode %s: %w", key, err)
		}
		return data, true, nil
	}, opts...)
	return out, r.Rev, err
}
