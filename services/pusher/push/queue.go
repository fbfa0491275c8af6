package push

import (
	"sync"
	"time"
)

// queue is one tenant's coalescing work queue of dirty persons, with
// client-go workqueue semantics: fair (FIFO), stingy (a key waiting is held
// once however often it is added) and a key added while it is being
// processed is processed again after Done. Items are ledger keys, never
// snapshots: the push writes the person's entry as stored (seen.go keeps a
// hint of it, which every write checks by compare-and-set).
type queue struct {
	// takeMu lets one Take at a time wait and linger, so concurrent push
	// loops fill batches one after another instead of splitting one.
	takeMu     sync.Mutex
	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	dirty      map[string]bool // waiting
	processing map[string]bool
	again      map[string]bool      // added while processing
	since      map[string]time.Time // when a waiting key was queued
	closed     bool
	// onTake observes how long each taken key waited (linger included).
	onTake func(wait time.Duration)
}

func newQueue() *queue {
	q := &queue{dirty: map[string]bool{}, processing: map[string]bool{}, again: map[string]bool{}, since: map[string]time.Time{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key.
func (q *queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if q.processing[key] {
		q.again[key] = true
		return
	}
	if q.dirty[key] {
		return
	}
	q.dirty[key] = true
	q.since[key] = time.Now()
	q.order = append(q.order, key)
	q.cond.Signal()
}

// AddIfIdleAfter queues key once d has passed, unless it is then waiting
// or being processed (the sweep: work in hand needs no second round).
func (q *queue) AddIfIdleAfter(key string, d time.Duration) {
	add := func() {
		q.mu.Lock()
		idle := !q.dirty[key] && !q.processing[key]
		q.mu.Unlock()
		if idle {
			q.Add(key)
		}
	}
	if d <= 0 {
		add()
		return
	}
	time.AfterFunc(d, add)
}

// AddAfter queues key once d has passed.
func (q *queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	time.AfterFunc(d, func() { q.Add(key) })
}

// Len is the number of waiting keys.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// Take waits for a first key, then lingers up to linger for more while
// moreComing says company is on its way (nil: for the whole linger), and
// returns up to n keys marked as processing; nil only once the queue is
// closed. Lingering only for company known to be coming keeps a lone
// opt-out real-time and still fills the batches of a burst. Takers take
// turns, and one that finds the queue emptied all the same waits again: a
// taker that returned nil while the queue was open would end its worker.
func (q *queue) Take(n int, linger time.Duration, moreComing func() bool) []string {
	q.takeMu.Lock()
	defer q.takeMu.Unlock()
	q.mu.Lock()
	for {
		for len(q.order) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return nil
		}
		if len(q.order) < n && linger > 0 {
			q.mu.Unlock()
			deadline := time.Now().Add(linger)
			for time.Now().Before(deadline) && q.Len() < n && (moreComing == nil || moreComing()) && !q.isClosed() {
				time.Sleep(min(time.Until(deadline), 2*time.Millisecond))
			}
			q.mu.Lock()
		}
		if len(q.order) > 0 {
			break
		}
	}
	k := min(n, len(q.order))
	out := append([]string(nil), q.order[:k]...)
	q.order = q.order[k:]
	now := time.Now()
	waits := make([]time.Duration, len(out))
	for i, key := range out {
		delete(q.dirty, key)
		waits[i] = now.Sub(q.since[key])
		delete(q.since, key)
		q.processing[key] = true
	}
	q.mu.Unlock()
	if q.onTake != nil {
		for _, w := range waits {
			q.onTake(w)
		}
	}
	return out
}

func (q *queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// Done ends processing of key, queueing it again if it was added meanwhile.
func (q *queue) Done(key string) {
	q.mu.Lock()
	delete(q.processing, key)
	again := q.again[key]
	delete(q.again, key)
	q.mu.Unlock()
	if again {
		q.Add(key)
	}
}

// Close wakes every Take with nil.
func (q *queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
