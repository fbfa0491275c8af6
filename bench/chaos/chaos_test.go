package main

import (
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
