package push

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// held keeps one tenant's events that were folded without a dirty marker
// and left unacked (ingest Result.At.Held): until it is settled, the event,
// redelivered if this replica dies, is what owes its person's push. An
// opt-out pushed at once then costs the dirty set nothing, where a marker
// put before the ack and deleted after the confirmation were two of the
// eight messages the server stored per opt-out.
//
// A person's events are acked when a write of a batch leaves the person
// clean at or past the revision each was folded at (end), or, once the
// hold has passed without that (a held-back tenant, a retry's wait, a
// write that moved), after ledger.MarkHeld has put the marker (due). A
// batch's writes skip the marker only while begin said the person is
// held, and due acks no event of a person in a batch, so no held event is
// settled while such a write may still leave its person dirty. A batch
// that outlasts the hold (a hanging call, a dead replica's) gets its
// persons' markers put all the same, unacked, so every replica's sweep
// finds them without waiting for the events' redelivery.
type held struct {
	mu sync.Mutex
	m  map[string]*heldPerson
	n  int // events held
	// limit bounds the events held; past it an event is folded with its
	// marker and acked at once, so a slow tenant cannot take the shared
	// consumer's unacknowledged window.
	limit int
	hold  time.Duration
}

type heldPerson struct {
	events  []heldEvent
	inBatch bool
	marking bool // due is putting the marker
	// flagged: the marker was put during the batch in flight (the events
	// stay held until it ends).
	flagged bool
}

type heldEvent struct {
	msg jetstream.Msg
	rev uint64    // the revision the fold left the entry at
	at  time.Time // when it was folded
}

// One tenant's held events may take 1/heldShare of the shared consumer's
// unacknowledged window (MaxAckPending): a burst's tenant folding faster
// than it pushes holds up to that, and its events beyond are marked and
// acked at once, so a slow tenant cannot take the window from the others.
const heldShare = 4

// heldFor is how long an event is held before its person is marked dirty
// and it is acked: long enough for a healthy tenant's push (a linger and a
// Salesforce call), short against the consumer's AckWait (at most a
// quarter of it).
const heldFor = 2 * time.Second

// holdFor is the hold under the consumer's AckWait.
func holdFor(ackWait time.Duration) time.Duration {
	if ackWait > 0 {
		return min(heldFor, ackWait/4)
	}
	return heldFor
}

func newHeld(hold time.Duration, limit int) *held {
	return &held{m: map[string]*heldPerson{}, limit: limit, hold: hold}
}

// room says whether the next event may be held.
func (h *held) room() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n < h.limit
}

// add holds msg, folded into key's entry at rev.
func (h *held) add(key string, msg jetstream.Msg, rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.m[key]
	if p == nil {
		p = &heldPerson{}
		h.m[key] = p
	}
	p.events = append(p.events, heldEvent{msg: msg, rev: rev, at: time.Now()})
	h.n++
}

// begin is a batch taking key: it reports whether the batch's writes may
// skip the marker (the person has held events, not being settled by due).
func (h *held) begin(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.m[key]
	if p == nil || p.marking || len(p.events) == 0 {
		return false
	}
	p.inBatch = true
	return true
}

// end is the batch that began key done: the events folded at or before
// cleanRev (0: the batch did not leave the person clean) are acked.
func (h *held) end(key string, cleanRev uint64) {
	h.mu.Lock()
	p := h.m[key]
	if p == nil {
		h.mu.Unlock()
		return
	}
	p.inBatch, p.flagged = false, false
	var settled []heldEvent
	if cleanRev != 0 {
		kept := p.events[:0]
		for _, e := range p.events {
			if e.rev <= cleanRev {
				settled = append(settled, e)
			} else {
				kept = append(kept, e)
			}
		}
		p.events = kept
		h.n -= len(settled)
	}
	h.drop(key, p)
	h.mu.Unlock()
	ackAll(settled)
}

// drop forgets p once nothing of it is left to settle.
func (h *held) drop(key string, p *heldPerson) {
	if len(p.events) == 0 && !p.inBatch && !p.marking {
		delete(h.m, key)
	}
}

// due settles the events held longer than the hold (all of them with
// all), of persons not in a batch: mark puts the person's marker, and only
// once it has are the person's events acked. A failed mark leaves them
// held, for the next round or their redelivery. A person in a batch past
// the hold is only marked.
func (h *held) due(ctx context.Context, all bool, mark func(ctx context.Context, key string) error) {
	type job struct {
		key    string
		events []heldEvent // nil: mark only (a batch holds the person)
	}
	var jobs []job
	h.mu.Lock()
	now := time.Now()
	for key, p := range h.m {
		if p.marking || len(p.events) == 0 || (!all && now.Sub(p.events[0].at) < h.hold) {
			continue
		}
		switch {
		case p.inBatch && p.flagged:
			continue
		case p.inBatch:
			jobs = append(jobs, job{key: key})
		default:
			jobs = append(jobs, job{key: key, events: p.events})
			p.events = nil
		}
		p.marking = true
	}
	h.mu.Unlock()
	each(jobs, func(_ int, j job) {
		err := mark(ctx, j.key)
		h.mu.Lock()
		p := h.m[j.key]
		p.marking = false
		switch {
		case j.events == nil:
			p.flagged = err == nil && p.inBatch
		case err != nil:
			p.events = append(j.events, p.events...)
		default:
			h.n -= len(j.events)
		}
		h.drop(j.key, p)
		h.mu.Unlock()
		if err == nil {
			ackAll(j.events)
		}
	})
}

func ackAll(events []heldEvent) {
	for _, e := range events {
		// A lost ack is a redelivery: folded again (a no-op) and held anew.
		_ = e.msg.Ack()
	}
}
