// Command chaos (make chaos) runs the model-based randomized run of the push
// at scale: random histories of opt-outs and resubscribes through two pusher
// replicas, one killed mid-batch, against a Salesforce sandbox that fails
// transiently, compared person by person with the reference model
// (internal/refmodel). It writes the report (bench/chaos.md) and exits 1 when
// anything is lost, reverted or doubled.
//
//	go run ./bench/chaos -persons 100000 -out bench/chaos.md [-seed N]
//
// It runs in process on the test stack (internal/teststack) against the
// NATS server of $NATS_URL (make test's, 127.0.0.1:4322, by default). The
// same run, at 1,000 persons, is this package's test, so make test keeps it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
)

func main() {
	persons := flag.Int("persons", 100_000, "persons in the run (make test runs 1,000)")
	out := flag.String("out", "", "write the Markdown report here (bench/chaos.md)")
	seed := flag.Uint64("seed", 0, "replay the histories of this seed (default: a new one, which the run logs)")
	flag.Parse()
	if *persons <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: -persons must be positive")
		os.Exit(2)
	}
	c := config{persons: *persons, seed: *seed, out: *out}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	r := &runner{}
	if !r.run(func() { run(r, c) }) {
		fmt.Fprintln(os.Stderr, "chaos: FAIL")
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "chaos: PASS")
}

// runner is what the test stack needs of a test (teststack.TB), for a
// program: Fatal ends the run's goroutine as it ends a test's, and the
// cleanups run once the run is over, last registered first.
type runner struct {
	out      io.Writer // where it logs (nil: stderr)
	mu       sync.Mutex
	failed   bool
	cleanups []func()
}

// run calls fn on its own goroutine (so Fatal can end it) and then the
// cleanups; it reports whether nothing failed.
func (r *runner) run(fn func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			break
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		f()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.failed
}

func (r *runner) Helper()         {}
func (r *runner) Name() string    { return "chaos" }
func (r *runner) Log(args ...any) { r.print(fmt.Sprintln(args...)) }
func (r *runner) Logf(format string, args ...any) {
	r.print(fmt.Sprintf(format, args...) + "\n")
}

func (r *runner) Errorf(format string, args ...any) {
	r.fail()
	r.Logf(format, args...)
}

func (r *runner) Fatal(args ...any) {
	r.fail()
	r.Log(args...)
	runtime.Goexit()
}

func (r *runner) Fatalf(format string, args ...any) {
	r.fail()
	r.Logf(format, args...)
	runtime.Goexit()
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}

// print writes one line, lines of several goroutines apart.
func (r *runner) print(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.out
	if out == nil {
		out = os.Stderr
	}
	fmt.Fprint(out, line)
}
