package push

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/flow/sfwrite"
)

// The pusher keeps only its own concerns of the write protocol's outcomes:
// where each person goes in the queue, and the tenant's health. A person
// that moved or was converted goes round at once, a failed one waits its
// backoff, and a tenant-level failure holds the tenant.
func TestEachOutcomePutsThePersonWhereItSays(t *testing.T) {
	r := loopRunner(t, Config{QuotaPause: time.Hour, HealthRecheck: time.Hour, BackoffInitial: time.Hour, BackoffMax: time.Hour}, newFakeWriter(nil))
	b := &batch{clean: map[string]uint64{}}
	p := func(key string) *person {
		return &person{Person: sfwrite.Person{Key: key, Value: true}, ctx: context.Background()}
	}
	quota := &salesforce.Error{Op: "update opt-out", Code: "REQUEST_LIMIT_EXCEEDED", Class: salesforce.Quota}
	transient := map[string]bool{}
	for key, o := range map[string]sfwrite.Outcome{
		"moved":     {Kind: sfwrite.Moved},
		"converted": {Kind: sfwrite.Converted},
		"failed":    {Kind: sfwrite.Failed, Wait: time.Hour, Class: salesforce.Retryable, Cause: &salesforce.Error{Code: "UNABLE_TO_LOCK_ROW", Class: salesforce.Retryable}},
		"quota":     {Kind: sfwrite.TenantHeld, Class: salesforce.Quota, Cause: quota},
	} {
		transient[key] = r.settle(b, p(key), "HasOptedOutOfEmail", o, nil)
	}
	if n := r.q.Len(); n != 2 {
		t.Fatalf("%d persons ready; want 2 (the moved and the converted; the failed and the held wait)", n)
	}
	var keys []string
	for _, w := range r.q.Take(10, 0, nil) {
		keys = append(keys, w.Key)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"converted", "moved"}) {
		t.Fatalf("ready %q; want converted and moved", keys)
	}
	if !transient["failed"] || transient["quota"] || transient["moved"] {
		t.Fatalf("transient %v; want only the retryable failure to count against the breaker", transient)
	}
	if wait := r.health.HoldOff(context.Background()); wait <= 0 {
		t.Fatalf("hold-off %s after a quota failure; want the tenant paused", wait)
	}
}
