package salesforce

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// heapPeak samples runtime.MemStats.HeapInuse until stopped and keeps the
// maximum. The emulator runs in the same process, so the figure includes its
// records and response buffers; base-heap-MB (sampled before the timed part)
// says how much of it was there before.
type heapPeak struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func startHeapPeak(every time.Duration) *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.sample()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.sample()
			}
		}
	}()
	return h
}

func (h *heapPeak) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > h.peak {
		h.peak = ms.HeapInuse
	}
}

func (h *heapPeak) done() float64 {
	close(h.stop)
	h.wg.Wait()
	h.sample()
	return float64(h.peak) / (1 << 20)
}

func heapInuseMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// benchClient is a client without span or metric export (otel no-op globals).
func benchClient(b *testing.B, e *env) *Client {
	c, err := New(context.Background(), Config{TokenURL: e.base, ClientID: testClientID, ClientSecret: testSecret})
	require.NoError(b, err)
	return c
}

// BenchmarkUpdateOptOut sends 200-record PATCH /composite/sobjects batches
// (100 Contacts + 100 Leads each) to the emulator over loopback HTTP.
func BenchmarkUpdateOptOut(b *testing.B) {
	// The emulator trims its full change feed by copying all of it on every
	// write (O(MaxChanges) per record once 10,000 changes are held), which
	// would dominate this benchmark; a one-entry feed keeps the client in view.
	e := newEnv(b, func(oc *sandbox.OrgConfig) { oc.Behavior.MaxChanges = 1 })
	recs := e.org.Seed(sandbox.SeedSpec{Contacts: 10000, Leads: 10000})
	c := benchClient(b, e)
	ctx := context.Background()
	batches := make([][]Update, len(recs)/200)
	for i := range batches {
		for _, r := range recs[i*200 : (i+1)*200] {
			batches[i] = append(batches[i], Update{ID: r.ID, Field: optOutField, Value: true})
		}
	}
	_, err := c.UpdateOptOut(ctx, batches[0]) // token and connection warm-up
	require.NoError(b, err)
	base := heapInuseMB()

	b.ReportAllocs()
	peak := startHeapPeak(5 * time.Millisecond)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		batch := batches[i%len(batches)]
		for k := range batch {
			batch[k].Value = i%2 == 0 // a real write every time
		}
		res, err := c.UpdateOptOut(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		if !res[0].Success || !res[len(res)-1].Success {
			b.Fatalf("record failed: %v", res[0].Err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*200)/elapsed.Seconds(), "records/s")
	b.ReportMetric(peak.done(), "peak-heap-MB")
	b.ReportMetric(base, "base-heap-MB")
}

// BenchmarkBulkQuery1M streams a 1,000,000-row Bulk API 2.0 query job from
// the emulator: create, poll, then CSV pages of 100,000 rows.
func BenchmarkBulkQuery1M(b *testing.B) {
	const rows = 1000000
	e := newEnv(b)
	e.org.Seed(sandbox.SeedSpec{Contacts: rows, OptedOutShare: 0.2})
	c := benchClient(b, e)
	ctx := context.Background()
	opts := BulkQueryOptions{PollInitial: 10 * time.Millisecond, PollMax: 200 * time.Millisecond, MaxWait: 10 * time.Minute, MaxRecords: 100000}
	_, err := c.InstanceURL(ctx)
	require.NoError(b, err)
	base := heapInuseMB()

	b.ReportAllocs()
	peak := startHeapPeak(5 * time.Millisecond)
	b.ResetTimer()
	start := time.Now()
	var total int64
	for i := 0; i < b.N; i++ {
		opted := 0
		res, err := c.BulkQuery(ctx, "SELECT Id, HasOptedOutOfEmail FROM Contact", opts, func(_, row []string) error {
			if row[1] == "true" {
				opted++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if res.Rows != rows {
			b.Fatalf("got %d rows, want %d", res.Rows, rows)
		}
		total += res.Rows
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "records/s")
	b.ReportMetric(peak.done(), "peak-heap-MB")
	b.ReportMetric(base, "base-heap-MB")
}
