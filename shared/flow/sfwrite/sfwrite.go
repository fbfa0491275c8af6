// Package sfwrite is the Salesforce write protocol every writer (the
// pusher, the nightly reconcile) runs: Batch claims the batch's persons,
// records each write before it is made, checks the writer's fence, writes
// in Collections calls (the push's sales field: one /composite that reads
// the field just before writing it) and records each outcome through the state machine
// (conversions followed, failures classified by salesforce.ClassOf,
// permanent ones dead-lettered). Writers differ only by Config, and are
// fenced by the writer they pass (a fenced one for the reconcile), not by
// checks of their own.
package sfwrite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Clients gives a tenant's Salesforce client.
type Clients interface {
	Get(ctx context.Context, tenant string) (sfcreds.Client, error)
}

// Claim is the batch's claim for a write of field taken at now, and the
// deadline of its call on the process's clock: sales-field writes hold a
// claim on their persons (optout.Claim) and their call must end while it
// holds; Email Opt Out is only ever set, so writers need not take turns
// (nil, no deadline).
func Claim(field string, now time.Time, ttl time.Duration) (*optout.Claim, time.Time) {
	if field == optout.StandardField {
		return nil, time.Time{}
	}
	c := optout.NewClaim(now, ttl)
	return c, c.CallDeadline(now)
}

// Person is one person of a batch, as the writer last saw it (At), with
// the value to write and the batch's claim once Attempt took it.
type Person struct {
	Key   string
	At    ledger.Snapshot
	Value bool
	Claim *optout.Claim
}

// Attempted is what recording a write before making it came to.
type Attempted struct {
	// Moved: the entry changed since it was read; nothing was recorded
	// and the person is read again.
	Moved bool
	// Held: another writer's claim holds the person until Held.Until;
	// nothing was recorded.
	Held *optout.Claim
}

// Ok reports whether the write may be made.
func (a Attempted) Ok() bool { return !a.Moved && a.Held == nil }

// Attempt records, before the write of p's value to w's field is made,
// that it may land, and takes claim on p (optout.Attempt), based on the
// entry p was read at. When it may be made, p is rebased on the entry
// that says so and holds claim.
func Attempt(ctx context.Context, w Ledger, field string, p *Person, claim *optout.Claim, now time.Time) (Attempted, error) {
	var held *optout.Claim
	res, err := w.Update(ctx, p.Key, optout.AttemptStep(optout.Write{
		SalesforceID: p.At.Entry.SalesforceID, Field: field, Value: p.Value, At: now, Claim: claim,
	}, &held), ledger.From(p.At))
	if err != nil {
		return Attempted{}, fmt.Errorf("record the write of %s before making it: %w", p.Key, err)
	}
	a := Attempted{Moved: res.Moved, Held: held}
	if a.Ok() {
		p.At.Entry, p.At.Rev, p.At.Mark, p.Claim = res.Entry, res.Rev, res.Mark, claim
	}
	return a, nil
}

// Record records the outcome of p's write (ok: Salesforce confirmed it)
// through the state machine: confirmed only if the entry has not moved
// since p.At, else Salesforce's value is unknown and the person stays
// dirty. found: the write's own call read the mark already set, so it is
// someone else's (optout.Write.FoundSet). It releases p's claim.
func Record(ctx context.Context, w Ledger, field string, p *Person, ok, found bool, now time.Time) (ledger.Result, error) {
	return w.Update(ctx, p.Key, optout.WroteStep(optout.Write{
		SalesforceID: p.At.Entry.SalesforceID, Field: field, Value: p.Value, At: now, OK: ok, Claim: p.Claim, FoundSet: found,
	}), ledger.From(p.At))
}

// Parallel runs fn over items, at most workers at once, and returns the
// first error (the other items still run: each is independent); once ctx
// ends no further item starts.
func Parallel[T any](ctx context.Context, workers int, items []T, fn func(context.Context, int, T) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range max(1, min(workers, len(items))) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i, items[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
