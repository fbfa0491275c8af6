package queue

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a fake time the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// acks counts the acks of held events by name.
type acks struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *acks) of(name string) Ack {
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.n[name]++
	}
}

func (a *acks) count(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[name]
}

// marks records the keys Due had marked, failing while fail is set.
type marks struct {
	mu   sync.Mutex
	keys []string
	fail error
}

func (m *marks) mark(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = append(m.keys, key)
	return m.fail
}

func (m *marks) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

const hold = 2 * time.Second

func newTest() (*Queue[string], *clock, *acks) {
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	q := New[string](Config{HintLimit: 100, HintFresh: 5 * time.Second, HoldLimit: 100, Hold: hold, Now: c.Now})
	return q, c, &acks{n: map[string]int{}}
}

func keys(ws []Work[string]) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Key
	}
	return out
}

// Two takers linger on one key: the one that finds it taken must wait for
// the next key, not return as if the queue were closed (a push worker
// that returned was gone for good, and the tenant pushed with fewer, or
// none).
func TestTakeAfterAnotherTakerEmptiedTheQueueWaitsForMore(t *testing.T) {
	q, _, _ := newTest()
	q.Add("a")
	got := make(chan []Work[string], 2)
	for range 2 {
		go func() { got <- q.Take(2, 50*time.Millisecond, nil) }()
	}
	first := <-got
	if k := keys(first); len(k) != 1 || k[0] != "a" {
		t.Fatalf("first Take = %v; want [a]", k)
	}
	select {
	case second := <-got:
		t.Fatalf("second Take returned %v with nothing queued and the queue open", keys(second))
	case <-time.After(200 * time.Millisecond):
	}
	q.Add("b")
	if k := keys(<-got); len(k) != 1 || k[0] != "b" {
		t.Fatalf("second Take = %v; want [b]", k)
	}
	q.Close()
	if ws := q.Take(1, 0, nil); ws != nil {
		t.Fatalf("Take after Close = %v; want nil", keys(ws))
	}
}

// Keys come out oldest first, each once however often it was added, at
// most n per Take.
func TestTakeIsFIFOAndStingy(t *testing.T) {
	q, _, _ := newTest()
	for _, k := range []string{"a", "b", "a", "c", "b"} {
		q.Add(k)
	}
	if q.Len() != 3 {
		t.Fatalf("Len = %d; want 3 (a, b, c once each)", q.Len())
	}
	if k := keys(q.Take(2, 0, nil)); !slices.Equal(k, []string{"a", "b"}) {
		t.Fatalf("Take(2) = %v; want [a b]", k)
	}
	if k := keys(q.Take(2, 0, nil)); !slices.Equal(k, []string{"c"}) {
		t.Fatalf("Take(2) = %v; want [c]", k)
	}
}

// A key added while it is processed is processed again after Done, once
// (client-go's semantics), not at once: one person is never in two
// batches.
func TestKeyAddedWhileProcessingComesBackOnce(t *testing.T) {
	q, _, _ := newTest()
	q.Add("a")
	ws := q.Take(10, 0, nil)
	q.Add("a")
	q.Add("a")
	if q.Len() != 0 {
		t.Fatalf("a key being processed was queued again at once")
	}
	q.Done(ws[0].Key, 0)
	if k := keys(q.Take(10, 0, nil)); !slices.Equal(k, []string{"a"}) {
		t.Fatalf("after Done: %v; want [a] once", k)
	}
}

// The sweep's AddIfIdleAfter leaves a key waiting or in a batch alone:
// every path of a batch settles or re-queues its persons itself.
func TestAddIfIdleLeavesWorkInHandAlone(t *testing.T) {
	q, _, _ := newTest()
	q.Add("a")
	ws := q.Take(1, 0, nil)
	q.AddIfIdleAfter("a", 0)
	q.Done(ws[0].Key, 0)
	if q.Len() != 0 {
		t.Fatal("a key swept while in a batch came round again")
	}
	q.AddIfIdleAfter("b", 0)
	q.AddIfIdleAfter("b", 0)
	if k := keys(q.Take(10, 0, nil)); !slices.Equal(k, []string{"b"}) {
		t.Fatalf("an idle swept key: %v; want [b] once", k)
	}
}

// A hint is the newest entry offered, used once (taken with its key), and
// only while fresh; past the limit persons are read instead; Forget drops
// it.
func TestAHintIsTheNewestFreshOneAndUsedOnce(t *testing.T) {
	q, c, _ := newTest()
	q.Offer("p", 7, "rev7", nil)
	q.Offer("p", 5, "rev5", nil) // an older fold, reported late
	w := q.Take(1, 0, nil)[0]
	if !w.Hinted || w.Hint != "rev7" {
		t.Fatalf("Take = %+v; want the newer hint rev7", w)
	}
	q.Add("p") // again while processing
	q.Done("p", 0)
	if w := q.Take(1, 0, nil)[0]; w.Hinted {
		t.Fatalf("a hint was used twice: %+v", w)
	}
	q.Done("p", 0)

	q.Offer("q", 1, "stale", nil)
	c.advance(6 * time.Second)
	if w := q.Take(1, 0, nil)[0]; w.Hinted {
		t.Fatalf("a stale hint was used: %+v; want the person read from the ledger", w)
	}
	q.Done("q", 0)

	q.Offer("r", 1, "r1", nil)
	q.Forget("r")
	if w := q.Take(1, 0, nil)[0]; w.Hinted {
		t.Fatalf("a forgotten hint was used: %+v", w)
	}
	q.Done("r", 0)

	q.cfg.HintLimit = 2
	q.Offer("a", 1, "a1", nil)
	q.Offer("b", 1, "b1", nil)
	q.Offer("c", 1, "c1", nil) // past the limit: queued, not hinted
	q.Offer("a", 2, "a2", nil) // a kept hint is still replaced
	got := map[string]Work[string]{}
	for _, w := range q.Take(3, 0, nil) {
		got[w.Key] = w
	}
	if len(got) != 3 || got["c"].Hinted || got["a"].Hint != "a2" || got["b"].Hint != "b1" {
		t.Fatalf("Take = %+v; want a2, b1 and c without a hint", got)
	}
}

// An offered event's ack travels with its key: the batch that takes it is
// told its events are held, and Done acks those folded at or before the
// revision the batch left the person clean at; the rest stay held.
func TestDoneAcksTheEventsTheBatchLeftClean(t *testing.T) {
	q, _, a := newTest()
	q.Offer("p", 3, "h", a.of("e3"))
	q.Offer("p", 4, "h", a.of("e4"))
	w := q.Take(1, 0, nil)[0]
	if !w.Held {
		t.Fatal("a key with held events was taken without Held")
	}
	q.Offer("p", 6, "h", a.of("e6")) // folded while the batch is in flight
	q.Done("p", 4)
	if a.count("e3") != 1 || a.count("e4") != 1 || a.count("e6") != 0 {
		t.Fatalf("acks = %v; want e3, e4 acked, e6 held", a.n)
	}
	// e6 made the key go round again, still owed.
	w = q.Take(1, 0, nil)[0]
	if w.Key != "p" || !w.Held {
		t.Fatalf("after Done: %+v; want p again, held", w)
	}
	q.Done("p", 0) // not left clean: nothing acked
	if a.count("e6") != 0 {
		t.Fatal("an event was acked by a batch that did not leave its person clean")
	}
	if q.Room() != true || q.held != 1 {
		t.Fatalf("held = %d; want 1", q.held)
	}
}

// Past the hold, a person's events not in a batch are settled by putting
// its marker first; a failed mark leaves them held for the next round.
func TestDueMarksThenAcksWhatIsHeldPastTheHold(t *testing.T) {
	q, c, a := newTest()
	m := &marks{}
	ctx := context.Background()
	q.Offer("p", 1, "h", a.of("e1"))
	q.Due(ctx, false, m.mark)
	if m.count() != 0 {
		t.Fatal("an event was settled before its hold passed")
	}
	c.advance(hold)
	m.fail = errors.New("ledger down")
	q.Due(ctx, false, m.mark)
	if m.count() != 1 || a.count("e1") != 0 {
		t.Fatalf("a failed mark: %d marks, e1 acked %d times; want 1 and none", m.count(), a.count("e1"))
	}
	m.fail = nil
	q.Due(ctx, false, m.mark)
	if m.count() != 2 || a.count("e1") != 1 {
		t.Fatalf("a mark: %d marks, e1 acked %d times; want 2 and once", m.count(), a.count("e1"))
	}
	// The key still waits (Due settles the events, not the work).
	if w := q.Take(1, 0, nil)[0]; w.Key != "p" || w.Held {
		t.Fatalf("after Due: %+v; want p, no longer held", w)
	}
}

// A person in a batch past the hold is only marked, once, and its events
// stay held until the batch ends, which acks them if it left it clean.
func TestDueOnlyMarksAPersonInABatch(t *testing.T) {
	q, c, a := newTest()
	m := &marks{}
	ctx := context.Background()
	q.Offer("p", 1, "h", a.of("e1"))
	if w := q.Take(1, 0, nil)[0]; !w.Held {
		t.Fatal("not held")
	}
	c.advance(hold)
	q.Due(ctx, false, m.mark)
	q.Due(ctx, false, m.mark)
	if m.count() != 1 || a.count("e1") != 0 {
		t.Fatalf("in a batch: %d marks, e1 acked %d times; want one mark and no ack", m.count(), a.count("e1"))
	}
	q.Done("p", 1)
	if a.count("e1") != 1 {
		t.Fatal("the batch that left the person clean did not ack its event")
	}
	if len(q.items) != 0 {
		t.Fatalf("items left after everything settled: %d", len(q.items))
	}
}

// While Due is marking a person, a batch that takes it is not told Held:
// its writes must put or keep the marker.
func TestATakeDuringAMarkIsNotHeld(t *testing.T) {
	q, c, a := newTest()
	q.Offer("p", 1, "h", a.of("e1"))
	c.advance(hold)
	marking, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Due(context.Background(), false, func(context.Context, string) error {
			close(marking)
			<-release
			return nil
		})
	}()
	<-marking
	w := q.Take(1, 0, nil)[0]
	close(release)
	<-done
	if w.Held {
		t.Fatal("a key taken while its marker is being put was told Held")
	}
	if a.count("e1") != 1 {
		t.Fatal("the marked event was not acked")
	}
}

// Due with all settles every held event, however young (shutdown).
func TestDueAllSettlesEverything(t *testing.T) {
	q, _, a := newTest()
	m := &marks{}
	q.Offer("p", 1, "h", a.of("e1"))
	q.Offer("r", 1, "h", a.of("e2"))
	q.Close()
	q.Due(context.Background(), true, m.mark)
	if a.count("e1") != 1 || a.count("e2") != 1 || m.count() != 2 {
		t.Fatalf("shutdown: acks %v, %d marks; want both marked and acked", a.n, m.count())
	}
}

// Past HoldLimit there is no room: the intake then folds with a marker and
// acks at once.
func TestRoomIsBoundedByTheHoldLimit(t *testing.T) {
	q, _, a := newTest()
	q.cfg.HoldLimit = 2
	q.Offer("p", 1, "h", a.of("e1"))
	if !q.Room() {
		t.Fatal("no room with 1 of 2 held")
	}
	q.Offer("r", 1, "h", a.of("e2"))
	if q.Room() {
		t.Fatal("room with 2 of 2 held")
	}
	ws := q.Take(2, 0, nil)
	for _, w := range ws {
		q.Done(w.Key, 1)
	}
	if !q.Room() {
		t.Fatal("no room once every held event was acked")
	}
}

// The taken keys' waits are observed (the queue stage of the metrics).
func TestOnTakeObservesEachKeysWait(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	var waits []time.Duration
	q := New[string](Config{Now: c.Now, OnTake: func(d time.Duration) { waits = append(waits, d) }})
	q.Add("a")
	c.advance(time.Second)
	q.Add("b")
	c.advance(time.Second)
	q.Take(2, 0, nil)
	if !slices.Equal(waits, []time.Duration{2 * time.Second, time.Second}) {
		t.Fatalf("waits = %v; want [2s 1s]", waits)
	}
}
