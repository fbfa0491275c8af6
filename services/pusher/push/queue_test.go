package push

import (
	"testing"
	"time"
)

// Two takers linger on one key: the one that finds it taken must wait for
// the next key, not return as if the queue were closed (a push worker
// that returned was gone for good, and the tenant pushed with fewer, or
// none).
func TestTakeAfterAnotherTakerEmptiedTheQueueWaitsForMore(t *testing.T) {
	q := newQueue()
	q.Add("a")
	got := make(chan []string, 2)
	for range 2 {
		go func() { got <- q.Take(2, 50*time.Millisecond, nil) }()
	}
	first := <-got
	if len(first) != 1 || first[0] != "a" {
		t.Fatalf("first Take = %v; want [a]", first)
	}
	select {
	case second := <-got:
		t.Fatalf("second Take returned %v with nothing queued and the queue open", second)
	case <-time.After(200 * time.Millisecond):
	}
	q.Add("b")
	if second := <-got; len(second) != 1 || second[0] != "b" {
		t.Fatalf("second Take = %v; want [b]", second)
	}
	q.Close()
	if keys := q.Take(1, 0, nil); keys != nil {
		t.Fatalf("Take after Close = %v; want nil", keys)
	}
}

// A key added while it is processed is processed again after Done, once.
func TestKeyAddedWhileProcessingComesBackOnce(t *testing.T) {
	q := newQueue()
	q.Add("a")
	keys := q.Take(10, 0, nil)
	q.Add("a")
	q.Add("a")
	if q.Len() != 0 {
		t.Fatalf("a key being processed was queued again at once")
	}
	q.Done(keys[0])
	if again := q.Take(10, 0, nil); len(again) != 1 || again[0] != "a" {
		t.Fatalf("after Done: %v; want [a] once", again)
	}
}
