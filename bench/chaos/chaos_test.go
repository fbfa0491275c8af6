package main

import (
	"fmt"
	"io"
	"testing"
	"time"
)

// TestModelRandomHistoriesThroughTwoReplicas is the chaos run at 1,000
// persons, the same code as make chaos's, so make test keeps it as a
// safety net (it needs NATS: skipped under -short).
func TestModelRandomHistoriesThroughTwoReplicas(t *testing.T) {
	t.Parallel()
	run(t, config{persons: 1000, seed: uint64(time.Now().UnixNano())})
}

// The program's runner does what go test does for a test: Fatalf ends the
// run (nothing after it runs), the run is reported failed, and the cleanups
// run afterwards, last registered first, so make chaos exits 1 and leaves
// nothing behind.
func TestRunnerFatalEndsTheRunThenRunsCleanups(t *testing.T) {
	var order []string
	r := &runner{out: io.Discard}
	ok := r.run(func() {
		r.Cleanup(func() { order = append(order, "first registered") })
		r.Cleanup(func() { order = append(order, "last registered") })
		r.Fatalf("lost %d", 1)
		order = append(order, "after Fatalf")
	})
	if ok {
		t.Error("run reported success after Fatalf")
	}
	if got := fmt.Sprint(order); got != "[last registered first registered]" {
		t.Errorf("ran %s; want the cleanups, last registered first, and nothing after Fatalf", got)
	}
	if !(&runner{out: io.Discard}).run(func() {}) {
		t.Error("a run that did not fail reported failure")
	}
}
