package sandbox

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// faultState is an injected fault with its match counters.
type faultState struct {
	id       string
	f        Fault
	recordID string // normalised 18-char form of f.RecordID
	seen     int    // matching calls so far
	applied  int
}

// InjectFault adds a fault; it returns an id for ClearFault.
func (o *Org) InjectFault(f Fault) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.faultSeq++
	fs := &faultState{id: "fault-" + strconv.Itoa(o.faultSeq), f: f}
	if f.RecordID != "" {
		if id, ok := To18(f.RecordID); ok {
			fs.recordID = id
		} else {
			fs.recordID = f.RecordID // matches nothing valid, on purpose
		}
	}
	o.faults = append(o.faults, fs)
	return fs.id
}

// ClearFaults removes every injected fault.
func (o *Org) ClearFaults() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.faults = nil
}

// ClearFault removes one fault; it reports whether it was still active.
func (o *Org) ClearFault(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, f := range o.faults {
		if f.id == id {
			o.faults = append(o.faults[:i], o.faults[i+1:]...)
			return true
		}
	}
	return false
}

// ActiveFault describes an injected fault for listing.
type ActiveFault struct {
	ID      string `json:"id"`
	Fault   Fault  `json:"fault"`
	Seen    int    `json:"seen"`
	Applied int    `json:"applied"`
}

// Faults lists the active faults.
func (o *Org) Faults() []ActiveFault {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []ActiveFault{}
	for _, f := range o.faults {
		out = append(out, ActiveFault{ID: f.id, Fault: f.f, Seen: f.seen, Applied: f.applied})
	}
	return out
}

// matchFault finds the first fault that fires for this call. recordIDs are
// the records the call touches (nil: none known); a fault with RecordID
// matches only calls touching it. Counters advance on every matching call.
func (o *Org) matchFault(route string, recordIDs []string) *Fault {
	return o.match(route, recordIDs, false)
}

// matchRecordFault is matchFault for one record inside a collection call:
// only faults naming a RecordID take part.
func (o *Org) matchRecordFault(route, recordID string) *Fault {
	return o.match(route, []string{recordID}, true)
}

func (o *Org) match(route string, recordIDs []string, perRecord bool) *Fault {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := 0; i < len(o.faults); i++ {
		fs := o.faults[i]
		if !fs.f.Until.IsZero() && !now.Before(fs.f.Until) {
			o.faults = append(o.faults[:i], o.faults[i+1:]...)
			i--
			continue
		}
		if fs.f.Route == "" && (route == RouteToken || route == RouteVersions) {
			continue // "" means every data route
		}
		if fs.f.Route != "" && fs.f.Route != route {
			continue
		}
		if perRecord && fs.recordID == "" {
			continue
		}
		if fs.recordID != "" && !containsID(recordIDs, fs.recordID) {
			continue
		}
		fs.seen++
		if fs.seen <= fs.f.Skip {
			continue
		}
		if fs.f.Share > 0 && o.rng.Float64() >= fs.f.Share {
			continue
		}
		fs.applied++
		if fs.f.Times > 0 && fs.applied >= fs.f.Times {
			o.faults = append(o.faults[:i], o.faults[i+1:]...)
		}
		f := fs.f
		f.RecordID = fs.id // carries the fault id back for the call log
		return &f
	}
	return nil
}

func containsID(ids []string, want string) bool {
	for _, id := range ids {
		if n, ok := To18(id); ok && n == want {
			return true
		}
	}
	return false
}

// sleepCtx waits d or until the request is gone.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// applyCallFault plays a call-level fault. It returns true when the fault
// answered (or dropped) the call; false when the handler should run, in
// which case rc (if any) may carry DropAfterWrite or BulkState for it.
func (o *Org) applyCallFault(w *recorder, r *http.Request, f *Fault, call *Call, rc *reqCtx) bool {
	call.FaultID = f.RecordID
	if !sleepCtx(r.Context(), f.Delay) {
		return true
	}
	switch {
	case f.DropBeforeWrite:
		dropConnection(w)
		call.Status = 0
		return true
	case f.DropAfterWrite:
		if rc != nil {
			rc.dropAfter = true
		}
		return false
	case f.BulkState != "":
		if rc != nil {
			rc.bulkState, rc.bulkMessage = f.BulkState, f.Message
		}
		return false
	case f.Status == 0 && f.ErrorCode == "" && !f.HTML:
		return false // delay only
	}
	recID := ""
	if rc != nil {
		recID = rc.recordID
	}
	o.writeFault(w, call.Route, f, recID)
	return true
}

// faultDefaults fills status, code and message of an error fault.
func (o *Org) faultDefaults(f *Fault, recordID string) (int, string, string) {
	status, code, msg := f.Status, f.ErrorCode, f.Message
	o.mu.Lock()
	b := o.cfg.Behavior
	o.mu.Unlock()
	if code == "" {
		code = map[int]string{401: "INVALID_SESSION_ID", 403: "REQUEST_LIMIT_EXCEEDED", 404: "NOT_FOUND",
			500: "UNKNOWN_EXCEPTION", 502: "SERVER_UNAVAILABLE", 503: "SERVER_UNAVAILABLE"}[status]
		if code == "" {
			code = "UNKNOWN_EXCEPTION"
		}
	}
	if status == 0 {
		status = map[string]int{"INVALID_SESSION_ID": 401, "INVALID_AUTH_HEADER": 401, "REQUEST_LIMIT_EXCEEDED": 403,
			"SERVER_UNAVAILABLE": 503, "UNKNOWN_EXCEPTION": 500, "NOT_FOUND": 404, "ENTITY_IS_DELETED": 404,
			"UNABLE_TO_LOCK_ROW": b.LockRowStatus, "INVALID_QUERY_LOCATOR": b.QueryLocatorStatus}[code]
		if status == 0 {
			status = 400
		}
	}
	if msg == "" {
		switch code {
		case "INVALID_SESSION_ID":
			msg = "Session expired or invalid"
		case "REQUEST_LIMIT_EXCEEDED":
			msg = "TotalRequests Limit exceeded."
		case "SERVER_UNAVAILABLE":
			msg = "Server too busy"
		case "UNABLE_TO_LOCK_ROW":
			msg = "unable to obtain exclusive access to this record or 1 records: " + recordID
		case "UNKNOWN_EXCEPTION":
			msg = "An unexpected error occurred. Please include this ErrorId if you contact support: 1771946343-25841 (-1558542349)"
		case "INVALID_QUERY_LOCATOR":
			msg = "invalid query locator"
		case "ENTITY_IS_DELETED":
			msg = "entity is deleted"
		case "NOT_FOUND":
			msg = msgNotFound
		default:
			msg = "injected fault"
		}
	}
	return status, code, msg
}

// writeFault answers with the fault's error (JSON array, OAuth object on
// the token route, or an HTML page).
func (o *Org) writeFault(w http.ResponseWriter, route string, f *Fault, recordID string) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.HTML {
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		w.Header().Del("Sforce-Limit-Info") // edge pages come from the CDN, not the API
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(status)
		text := http.StatusText(status)
		if status == 420 {
			text = "Enhance Your Calm"
		}
		fmt.Fprintf(w, "<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body><h1>%d %s</h1><p>%s</p></body></html>\n", status, text, status, text, f.Message)
		return
	}
	if route == RouteToken {
		status, code, msg := f.Status, f.ErrorCode, f.Message
		if status == 0 {
			status = http.StatusBadRequest
		}
		if code == "" {
			code = "invalid_grant"
		}
		if msg == "" {
			msg = "authentication failure"
		}
		oauthError(w, status, code, msg)
		return
	}
	status, code, msg := o.faultDefaults(f, recordID)
	var fields []string
	if code == "UNABLE_TO_LOCK_ROW" || code == "ENTITY_IS_DELETED" {
		fields = []string{}
	}
	writeError(w, status, code, msg, fields)
}
