package sandbox

import (
	"net/http"
	"time"
)

// Daily Bulk API 2.0 query job allowance shown by /limits.
const dailyBulkV2QueryJobs = 10000

// admit enforces the daily allowance and the long-running concurrency cap,
// then counts the call. It answers 403 itself when refused.
func (o *Org) admit(w http.ResponseWriter, call *Call) (release func(), ok bool) {
	// Wall clock: the concurrency cap is about real request duration.
	now := time.Now()
	o.mu.Lock()
	b := o.cfg.Behavior
	if o.usage >= o.cfg.DailyAPILimit {
		o.mu.Unlock()
		writeError(w, http.StatusForbidden, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", nil)
		return nil, false
	}
	long := 0
	for _, start := range o.inflight {
		if now.Sub(start) >= b.LongRequestThreshold {
			long++
		}
	}
	if long >= b.ConcurrentLongRequests {
		o.mu.Unlock()
		writeError(w, b.ConcurrentLimitStatus, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", nil)
		return nil, false
	}
	o.usage++
	call.Counted = true
	o.inflightSeq++
	id := o.inflightSeq
	o.inflight[id] = now
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		delete(o.inflight, id)
		o.mu.Unlock()
	}, true
}

// APICalls returns the calls counted against the daily allowance.
func (o *Org) APICalls() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.usage
}

// SetAPIUsage sets the counter, e.g. to the limit to exhaust the allowance.
func (o *Org) SetAPIUsage(used int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.usage = used
}

// SetDailyAPILimit changes the allowance.
func (o *Org) SetDailyAPILimit(max int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cfg.DailyAPILimit = max
}

type limitPair struct {
	Max       int `json:"Max"`
	Remaining int `json:"Remaining"`
}

func handleLimits(rc *reqCtx) {
	o := rc.o
	o.mu.Lock()
	api := limitPair{Max: o.cfg.DailyAPILimit, Remaining: max(o.cfg.DailyAPILimit-o.usage, 0)}
	bulk := limitPair{Max: dailyBulkV2QueryJobs, Remaining: max(dailyBulkV2QueryJobs-o.bulkQueryJobs, 0)}
	o.mu.Unlock()
	used, maxEvents := o.DeliveredEvents()
	events := limitPair{Max: maxEvents, Remaining: max(maxEvents-used, 0)}
	writeJSON(rc.w, http.StatusOK, map[string]limitPair{
		"DailyApiRequests":                  api,
		"DailyBulkV2QueryJobs":              bulk,
		"DailyDeliveredPlatformEvents":      events, // §9.9: the Pub/Sub delivery allocation
		"DailyBulkV2QueryFileStorageMB":     {Max: 976562, Remaining: 976562},
		"DailyBulkApiBatches":               {Max: 15000, Remaining: 15000},
		"ConcurrentAsyncGetReportInstances": {Max: 200, Remaining: 200},
		"DataStorageMB":                     {Max: 1024, Remaining: 1024},
	})
}
