// Package queue is one tenant's work queue of persons to push: a
// coalescing queue of ledger keys with client-go workqueue semantics, fair
// (FIFO), stingy (a key waiting is held once however often it is added),
// and a key added while it is processed is processed again after Done.
//
// Each key's item carries what its push needs besides the key, so a batch
// gets all of it from Take and gives it back to Done in one step:
//
//   - a hint of the person's entry (H: the entry this replica last folded
//     or wrote, at its revision), so the batch need not read the ledger
//     again. It is never the truth: every write that starts from it
//     compares-and-sets on its revision. Taken with its key, used once,
//     and only while fresh (an entry held back may have changed since).
//   - the acks of the events that owe the person's push, held unacked
//     (the ack travels with the work, as Benthos's AckFunc does): an
//     opt-out pushed at once then costs the ledger's dirty set nothing.
//     Done acks those folded at or before the revision the batch left the
//     person clean at; Due settles the ones held past the hold by having
//     the person's dirty marker put first. Take tells a batch whether its
//     writes may skip the marker (Work.Held), and Due acks no event of a
//     person in a batch, so no held event is settled while such a write
//     may still leave its person dirty. A batch that outlasts the hold
//     gets its persons' markers put all the same, unacked, so every
//     replica's sweep finds them.
package queue

import (
	"context"
	"sync"
	"time"
)

// Ack settles one held event (a lost ack is a redelivery, folded again as
// a no-op and held anew).
type Ack func()

// Config bounds a queue's hints and held events.
type Config struct {
	// HintLimit is the most hints kept; past it a person is read from the
	// ledger as it is taken. HintFresh is how long a hint may be used.
	HintLimit int
	HintFresh time.Duration
	// HoldLimit bounds the events held (Room); Hold is how long one is held
	// before Due settles it.
	HoldLimit int
	Hold      time.Duration
	// OnTake observes how long each taken key waited (linger included).
	OnTake func(wait time.Duration)
	// Now is the clock of hints and holds (nil: time.Now).
	Now func() time.Time
}

// Queue is one tenant's work queue; H is the hint's type.
type Queue[H any] struct {
	cfg Config
	// takeMu lets one Take at a time wait and linger, so concurrent
	// takers fill batches one after another instead of splitting one.
	takeMu sync.Mutex
	mu     sync.Mutex
	cond   *sync.Cond
	order  []string // waiting keys, oldest first
	items  map[string]*item[H]
	hints  int // items with a hint
	held   int // events held
	closed bool
}

// item is everything the queue knows of one key; it is dropped once none
// of it is left.
type item[H any] struct {
	waiting    bool
	processing bool
	again      bool      // added while processing
	since      time.Time // when it started waiting

	hinted  bool
	hint    H
	hintRev uint64
	hintAt  time.Time

	events  []heldEvent
	inBatch bool // a batch took it with Held
	marking bool // Due is putting its marker
	// flagged: the marker was put during the batch in flight (the events
	// stay held until it ends).
	flagged bool
}

type heldEvent struct {
	ack Ack
	rev uint64    // the revision the fold left the entry at
	at  time.Time // when it was held
}

// Work is one taken key and what its item carried.
type Work[H any] struct {
	Key string
	// Hint is the key's hint when Hinted (fresh); the item no longer has it.
	Hint   H
	Hinted bool
	// Held: events of the key are held for this batch, so its writes may
	// leave the dirty set alone; Done settles them.
	Held bool
}

// New is an empty queue.
func New[H any](cfg Config) *Queue[H] {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	q := &Queue[H]{cfg: cfg, items: map[string]*item[H]{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *Queue[H]) itemOf(key string) *item[H] {
	it := q.items[key]
	if it == nil {
		it = &item[H]{}
		q.items[key] = it
	}
	return it
}

// drop forgets key once nothing of it is left.
func (q *Queue[H]) drop(key string, it *item[H]) {
	if !it.waiting && !it.processing && !it.again && !it.hinted && len(it.events) == 0 && !it.inBatch && !it.marking {
		delete(q.items, key)
	}
}

// Add queues key.
func (q *Queue[H]) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(key)
}

func (q *Queue[H]) add(key string) {
	if q.closed {
		return
	}
	it := q.itemOf(key)
	switch {
	case it.processing:
		it.again = true
	case it.waiting:
	default:
		it.waiting = true
		it.since = q.cfg.Now()
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// Offer queues key with the hint of its entry at rev (kept unless a newer
// one is) and, with ack, the event that owes its push, held until Done or
// Due settles it.
func (q *Queue[H]) Offer(key string, rev uint64, hint H, ack Ack) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it := q.itemOf(key)
	switch {
	case it.hinted && it.hintRev >= rev:
	case it.hinted || q.hints < q.cfg.HintLimit:
		if !it.hinted {
			q.hints++
		}
		it.hinted, it.hint, it.hintRev, it.hintAt = true, hint, rev, q.cfg.Now()
	}
	if ack != nil {
		it.events = append(it.events, heldEvent{ack: ack, rev: rev, at: q.cfg.Now()})
		q.held++
	}
	q.add(key)
	q.drop(key, it) // closed, past the hint limit and no ack: nothing kept
}

// Forget drops key's hint: its entry was written without learning the new
// revision.
func (q *Queue[H]) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it := q.items[key]; it != nil && it.hinted {
		q.unhint(it)
		q.drop(key, it)
	}
}

func (q *Queue[H]) unhint(it *item[H]) {
	var zero H
	it.hinted, it.hint = false, zero
	q.hints--
}

// Room says whether the next event may be held: past HoldLimit an event
// is folded with its marker and acked at once, so a slow tenant cannot
// take the consumer's unacknowledged window.
func (q *Queue[H]) Room() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held < q.cfg.HoldLimit
}

// AddAfter queues key once d has passed.
func (q *Queue[H]) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	time.AfterFunc(d, func() { q.Add(key) })
}

// AddIfIdleAfter queues key once d has passed, unless it is then waiting
// or being processed (the sweep: work in hand needs no second round).
func (q *Queue[H]) AddIfIdleAfter(key string, d time.Duration) {
	add := func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if it := q.items[key]; it == nil || (!it.waiting && !it.processing) {
			q.add(key)
		}
	}
	if d <= 0 {
		add()
		return
	}
	time.AfterFunc(d, add)
}

// Len is the number of waiting keys.
func (q *Queue[H]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// Take waits for a first key, then lingers up to linger for more while
// moreComing says company is on its way (nil: for the whole linger), and
// returns up to n keys, each with its hint and whether its events are
// held for the batch, marked as processing until Done; nil only once the
// queue is closed. Lingering only for company known to be coming keeps a
// lone opt-out real-time and still fills the batches of a burst. Takers
// take turns, and one that finds the queue emptied all the same waits
// again: a taker that returned nil while the queue was open would end its
// worker.
func (q *Queue[H]) Take(n int, linger time.Duration, moreComing func() bool) []Work[H] {
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
	out := make([]Work[H], k)
	waits := make([]time.Duration, k)
	now := q.cfg.Now()
	for i, key := range q.order[:k] {
		it := q.items[key]
		it.waiting, it.processing = false, true
		waits[i] = now.Sub(it.since)
		w := Work[H]{Key: key}
		if it.hinted {
			if now.Sub(it.hintAt) <= q.cfg.HintFresh {
				w.Hint, w.Hinted = it.hint, true
			}
			q.unhint(it)
		}
		if len(it.events) > 0 && !it.marking {
			it.inBatch, w.Held = true, true
		}
		out[i] = w
	}
	q.order = q.order[k:]
	q.mu.Unlock()
	if q.cfg.OnTake != nil {
		for _, w := range waits {
			q.cfg.OnTake(w)
		}
	}
	return out
}

func (q *Queue[H]) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// Done ends the processing of key: its events folded at or before
// cleanRev (0: the batch did not leave the person clean) are acked, and
// it is queued again if it was added meanwhile.
func (q *Queue[H]) Done(key string, cleanRev uint64) {
	q.mu.Lock()
	it := q.items[key]
	if it == nil {
		q.mu.Unlock()
		return
	}
	it.inBatch, it.flagged = false, false
	var settled []heldEvent
	if cleanRev != 0 {
		kept := it.events[:0]
		for _, e := range it.events {
			if e.rev <= cleanRev {
				settled = append(settled, e)
			} else {
				kept = append(kept, e)
			}
		}
		it.events = kept
		q.held -= len(settled)
	}
	it.processing = false
	if it.again {
		it.again = false
		q.add(key)
	}
	q.drop(key, it)
	q.mu.Unlock()
	ackAll(settled)
}

// Due settles the events held longer than the hold (all of them with
// all), of keys not in a batch: mark puts the person's dirty marker, and
// only once it has are the events acked. A failed mark leaves them held,
// for the next round or their redelivery. A key in a batch past the hold
// is only marked.
func (q *Queue[H]) Due(ctx context.Context, all bool, mark func(ctx context.Context, key string) error) {
	type job struct {
		key    string
		events []heldEvent // nil: mark only (a batch holds the person)
	}
	var jobs []job
	q.mu.Lock()
	now := q.cfg.Now()
	for key, it := range q.items {
		if it.marking || len(it.events) == 0 || (!all && now.Sub(it.events[0].at) < q.cfg.Hold) {
			continue
		}
		switch {
		case it.inBatch && it.flagged:
			continue
		case it.inBatch:
			jobs = append(jobs, job{key: key})
		default:
			jobs = append(jobs, job{key: key, events: it.events})
			it.events = nil
		}
		it.marking = true
	}
	q.mu.Unlock()
	each(jobs, func(j job) {
		err := mark(ctx, j.key)
		q.mu.Lock()
		it := q.items[j.key]
		it.marking = false
		switch {
		case j.events == nil:
			it.flagged = err == nil && it.inBatch
		case err != nil:
			it.events = append(j.events, it.events...)
		default:
			q.held -= len(j.events)
		}
		q.drop(j.key, it)
		q.mu.Unlock()
		if err == nil {
			ackAll(j.events)
		}
	})
}

// Close wakes every Take with nil; later Adds are ignored. Held events
// stay for a last Due.
func (q *Queue[H]) Close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

func ackAll(events []heldEvent) {
	for _, e := range events {
		e.ack()
	}
}

// markConcurrency bounds Due's concurrent marks (ledger round trips).
const markConcurrency = 32

func each[T any](items []T, fn func(T)) {
	sem := make(chan struct{}, markConcurrency)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(it)
		})
	}
	wg.Wait()
}
