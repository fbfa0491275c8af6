package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/ledger"
)

// confirmWatch observes the ledger from outside the pusher: the moment the
// server stored a person's confirmed opt-out, minus the event's occurredAt
// (its publish time), is that opt-out's publish-to-confirmed latency.
type confirmWatch struct {
	w    jetstream.KeyWatcher
	done chan struct{}

	mu    sync.Mutex
	seen  map[string]bool
	byTen map[string][]sample
}

// sample is one confirmed opt-out.
type sample struct {
	decided time.Time
	latency time.Duration
}

// watchConfirms watches the ledger keys matching filters (e.g. "acme.>").
func watchConfirms(ctx context.Context, kv jetstream.KeyValue, filters []string) (*confirmWatch, error) {
	w, err := kv.WatchFiltered(ctx, filters, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	c := &confirmWatch{w: w, done: make(chan struct{}), seen: map[string]bool{}, byTen: map[string][]sample{}}
	go func() {
		defer close(c.done)
		for kve := range w.Updates() {
			if kve == nil {
				continue
			}
			var e ledger.Entry
			if json.Unmarshal(kve.Value(), &e) != nil || !confirmedOptOut(e) {
				continue
			}
			c.mu.Lock()
			if !c.seen[kve.Key()] {
				c.seen[kve.Key()] = true
				t, _, _ := strings.Cut(kve.Key(), ".")
				c.byTen[t] = append(c.byTen[t], sample{decided: e.DecidedAt, latency: kve.Created().Sub(e.DecidedAt)})
			}
			c.mu.Unlock()
		}
	}()
	return c, nil
}

func confirmedOptOut(e ledger.Entry) bool {
	return e.OptedOut && e.State == ledger.StateSynced && e.Confirmed != nil && *e.Confirmed && e.MergedInto == ""
}

// count is the confirmations seen so far.
func (c *confirmWatch) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// samplesBetween is between with each sample's decision time.
func (c *confirmWatch) samplesBetween(tenants []string, from, to time.Time) []sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sample
	for _, t := range tenants {
		for _, s := range c.byTen[t] {
			if !s.decided.Before(from) && s.decided.Before(to) {
				out = append(out, s)
			}
		}
	}
	return out
}

// between returns the latencies of tenants' confirmations (every tenant's
// when tenants is nil) whose event was decided in [from, to).
func (c *confirmWatch) between(tenants []string, from, to time.Time) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	add := func(ss []sample) {
		for _, s := range ss {
			if !s.decided.Before(from) && s.decided.Before(to) {
				out = append(out, s.latency)
			}
		}
	}
	if tenants == nil {
		for _, ss := range c.byTen {
			add(ss)
		}
		return out
	}
	for _, t := range tenants {
		add(c.byTen[t])
	}
	return out
}

func (c *confirmWatch) stop() {
	_ = c.w.Stop()
	<-c.done
}
