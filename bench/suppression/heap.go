package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/suppression"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// heapResult is what the index itself holds, measured in this process.
type heapResult struct {
	entries    int
	bytes      uint64 // live heap the index added
	build      time.Duration
	profileTop string // go tool pprof -top of the live heap, the index's sites
}

// measureIndex builds the index of o.entries persons in this process, as
// the admin service's feed does (the entries of seed, decoded), and
// measures the live heap it adds: the per-entry cost without the Go
// runtime, the start-up read's garbage or the service's other state. A
// heap profile says where it goes.
func measureIndex(o options, dir string) (heapResult, error) {
	changes := func(i int) ledger.Change {
		tenant, sc, _, _ := person(o, i)
		e := seedEntry(o, i)
		return ledger.Change{Key: keyOf(tenant, sc), Entry: e}
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// The profile records every allocation of the build, so its in-use
	// view is the index's own sites.
	runtime.MemProfileRate = 4096
	start := time.Now()
	x := suppression.NewIndex()
	for i := range o.entries {
		x.Apply(changes(i))
	}
	build := time.Since(start)
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	res := heapResult{entries: x.Size(), bytes: after.HeapAlloc - before.HeapAlloc, build: build}
	prof := filepath.Join(dir, "index.heap")
	f, err := os.Create(prof)
	if err != nil {
		return res, err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return res, err
	}
	f.Close()
	runtime.KeepAlive(x)
	out, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-lines", "-nodecount=10", prof).Output()
	if err != nil {
		return res, fmt.Errorf("go tool pprof: %w", err)
	}
	// Keep the table, not pprof's preamble of file names.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			lines = lines[i:]
			break
		}
	}
	res.profileTop = strings.Join(lines, "\n")
	return res, nil
}
