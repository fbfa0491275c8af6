package push

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// fakeWriter stands in for the batch's Salesforce write: it tells the test
// each batch it enters, holds it until released, and leaves clean the
// persons the test says at the revisions it says.
type fakeWriter struct {
	entered chan []string
	release chan struct{}
	clean   map[string]uint64
	ctxErr  atomic.Value // the last batch's context error, once released
	calls   atomic.Int64
}

func newFakeWriter(clean map[string]uint64) *fakeWriter {
	return &fakeWriter{entered: make(chan []string, 16), release: make(chan struct{}), clean: clean}
}

func (f *fakeWriter) write(ctx context.Context, b *batch, work []workItem) {
	f.calls.Add(1)
	keys := make([]string, len(work))
	for i, w := range work {
		keys[i] = w.Key
	}
	f.entered <- keys
	<-f.release
	f.ctxErr.Store(errOrNone{ctx.Err()})
	for _, w := range work {
		if rev, ok := f.clean[w.Key]; ok {
			b.leftClean(w.Key, rev)
		}
	}
}

type errOrNone struct{ err error }

// loopRunner is a runner of a replica with no servers: only its loop,
// queue and health are real.
func loopRunner(t *testing.T, cfg Config, w *fakeWriter) *runner {
	t.Helper()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Cfg: cfg, Metrics: m, Now: time.Now, Log: zerolog.Nop(), slots: make(chan struct{}, max(1, cfg.Workers))}
	r := s.newRunner("acme")
	r.write = w.write
	return r
}

// acker counts the acks of held events.
type acker struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *acker) ack(name string) func() {
	return func() { a.mu.Lock(); a.n[name]++; a.mu.Unlock() }
}

func (a *acker) count(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[name]
}

// A batch in flight when shutdown starts is finished with a live context
// (what Salesforce confirmed is recorded), the loop returns only after it,
// and each person goes back to the queue with the revision the batch left
// it clean at: the held events it covers are acked, the others stay held.
func TestTheLoopFinishesTheBatchInFlightAndAcksWhatItLeftClean(t *testing.T) {
	t.Parallel()
	w := newFakeWriter(map[string]uint64{"acme.p": 3})
	cfg := DefaultConfig()
	cfg.Linger = 0
	r := loopRunner(t, cfg, w)
	a := &acker{n: map[string]int{}}
	r.q.Offer("acme.p", 3, ledger.Snapshot{Rev: 3}, a.ack("p"))
	r.q.Offer("acme.q", 5, ledger.Snapshot{Rev: 5}, a.ack("q"))

	ctx, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, r.q.Close) // as run does
	done := make(chan struct{})
	go func() { defer close(done); r.dispatch(ctx) }()
	if got := <-w.entered; len(got) != 2 {
		t.Fatalf("batch = %v; want both persons in one batch", got)
	}
	cancel()
	select {
	case <-done:
		t.Fatal("the loop returned with a batch in flight")
	default:
	}
	close(w.release)
	<-done
	if e := w.ctxErr.Load().(errOrNone); e.err != nil {
		t.Fatalf("the batch in flight wrote with a context ended by shutdown: %v", e.err)
	}
	if a.count("p") != 1 || a.count("q") != 0 {
		t.Fatalf("acks p=%d q=%d; want p acked (left clean at its revision), q still held", a.count("p"), a.count("q"))
	}
}

// One tenant has at most TenantConcurrency batches in flight: the next
// keeps filling in the queue meanwhile.
func TestTheLoopKeepsATenantToItsConcurrency(t *testing.T) {
	t.Parallel()
	w := newFakeWriter(nil)
	cfg := DefaultConfig()
	cfg.Linger, cfg.BatchSize, cfg.TenantConcurrency = 0, 1, 2
	r := loopRunner(t, cfg, w)
	for _, k := range []string{"acme.a", "acme.b", "acme.c"} {
		r.q.Add(k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, r.q.Close)
	done := make(chan struct{})
	go func() { defer close(done); r.dispatch(ctx) }()
	<-w.entered
	<-w.entered
	// A loop without the bound would take the third at once.
	time.Sleep(100 * time.Millisecond)
	if n := w.calls.Load(); n != 2 || r.q.Len() != 1 {
		t.Fatalf("%d batches in flight, %d waiting; want 2 (TenantConcurrency) and 1", n, r.q.Len())
	}
	close(w.release)
	<-w.entered // the third, once a slot is free
	cancel()
	<-done
}

// A tenant its health holds off takes no batch while it is held.
func TestTheLoopTakesNothingWhileTheTenantIsHeldOff(t *testing.T) {
	t.Parallel()
	w := newFakeWriter(nil)
	close(w.release)
	cfg := DefaultConfig()
	cfg.Linger = 0
	r := loopRunner(t, cfg, w)
	r.health.Set(tenant.ModePaused, "daily API allowance spent", time.Hour)
	r.q.Add("acme.p")
	ctx, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, r.q.Close)
	done := make(chan struct{})
	go func() { defer close(done); r.dispatch(ctx) }()
	// A loop that ignored the pause would take the person at once.
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if n := w.calls.Load(); n != 0 || r.q.Len() != 1 {
		t.Fatalf("a paused tenant wrote %d batches (%d waiting); want none, the person still waiting", n, r.q.Len())
	}
}
