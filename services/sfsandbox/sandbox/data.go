package sandbox

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Extra route names (beyond the contract's) for Fault.Route and call logs.
const (
	RouteBulkQueryAbort   = "bulk.query.abort"
	RouteBulkQueryDelete  = "bulk.query.delete"
	RouteBulkQueryList    = "bulk.query.list"
	RouteBulkIngestDelete = "bulk.ingest.delete"
)

// maxURILength is the GET URI cap of the REST API (spec §5).
const maxURILength = 16384

// reqCtx is one data call on its way through the pipeline.
type reqCtx struct {
	o       *Org
	w       *recorder
	r       *http.Request
	version string // "62.0"
	segs    []string
	call    *Call
	// recordID is the (normalised when valid) record the URL names, if any.
	recordID string
	// tx collects the writes of a composite request's subrequest (nil
	// outside one), so allOrNone can undo them.
	tx *compositeTx
	// set by call-level faults for the handler
	dropAfter   bool
	bulkState   string
	bulkMessage string
}

// route is a matched data route.
type route struct {
	name      string
	handler   func(*reqCtx)
	recordIDs []string // records the call touches, for RecordID faults
	perRecord bool     // RecordID faults are applied per record by the handler
}

// serveData runs the pipeline shared by every /services/data/vNN.0/ route:
// URI cap, version, auth, allowance, concurrency, latency, faults, handler.
func (o *Org) serveData(w http.ResponseWriter, r *http.Request, rest string) {
	verSeg, sub, _ := strings.Cut(rest, "/")
	version := strings.TrimPrefix(verSeg, "v")
	rec := &recorder{ResponseWriter: w}
	call := Call{Method: r.Method, Path: r.URL.Path, AutoAssign: r.Header.Get("Sforce-Auto-Assign"), Client: callClient(r), At: o.now()}
	rc := &reqCtx{o: o, w: rec, r: r, version: version, call: &call}
	defer func() {
		if call.Status == 0 && !rc.dropAfter {
			call.Status = rec.status
		}
		o.logCall(call)
	}()

	if len(r.RequestURI) > maxURILength {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		rec.WriteHeader(http.StatusRequestURITooLong)
		fmt.Fprint(rec, "<html><head><title>414 Request-URI Too Large</title></head><body>414 Request-URI Too Large</body></html>\n")
		return
	}
	o.setLimitHeader(rec)
	o.mu.Lock()
	served := slices.Contains(o.cfg.APIVersions, version)
	retired := slices.Contains(o.cfg.RetiredAPIVersions, version)
	o.mu.Unlock()
	if !served {
		if retired {
			writeError(rec, http.StatusGone, "GONE", "The requested API version has been retired", nil)
			return
		}
		writeError(rec, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		return
	}
	rc.segs = strings.Split(strings.TrimSuffix(sub, "/"), "/")
	rt, allowed := o.matchRoute(rc)
	call.Route = rt.name
	if len(rt.recordIDs) == 1 {
		rc.recordID = rt.recordIDs[0]
		if id, ok := To18(rc.recordID); ok {
			rc.recordID = id
		}
	}

	if !o.authenticate(rec, r) {
		return
	}
	release, ok := o.admit(rec, &call)
	if !ok {
		return
	}
	defer release()
	o.setLimitHeader(rec)
	if rt.handler == nil {
		if allowed != "" {
			methodNotAllowed(rec, r, allowed)
		} else {
			writeError(rec, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		}
		return
	}
	o.mu.Lock()
	latency := o.latency
	o.mu.Unlock()
	if !sleepCtx(r.Context(), latency) {
		return
	}
	if f := o.matchFault(rt.name, rt.recordIDs); f != nil && o.applyCallFault(rec, r, f, &call, rc) {
		return
	}
	if rc.dropAfter {
		rec.discard = true
	}
	rt.handler(rc)
	if rc.dropAfter {
		dropConnection(w)
		call.Status = 0
	}
}

// setLimitHeader writes Sforce-Limit-Info with the current usage.
func (o *Org) setLimitHeader(w http.ResponseWriter) {
	o.mu.Lock()
	used, max := o.usage, o.cfg.DailyAPILimit
	o.mu.Unlock()
	w.Header().Set("Sforce-Limit-Info", fmt.Sprintf("api-usage=%d/%d", used, max))
}

// matchRoute resolves rc.segs; when the path exists but not for this method
// it returns the allowed methods.
func (o *Org) matchRoute(rc *reqCtx) (route, string) {
	s, m := rc.segs, rc.r.Method
	is := func(method string) bool { return m == method }
	n := len(s)
	switch {
	case n == 1 && s[0] == "limits":
		if is("GET") {
			return route{name: RouteLimits, handler: handleLimits}, ""
		}
		return route{name: RouteLimits}, "GET"
	case n == 3 && s[0] == "sobjects" && s[2] == "describe":
		if is("GET") {
			return route{name: RouteDescribe, handler: handleDescribe}, ""
		}
		return route{name: RouteDescribe}, "GET"
	case n == 3 && s[0] == "sobjects":
		switch m {
		case "GET":
			return route{name: RouteSObjectGet, handler: handleSObjectGet, recordIDs: []string{s[2]}}, ""
		case "PATCH":
			return route{name: RouteSObjectPatch, handler: handleSObjectPatch, recordIDs: []string{s[2]}}, ""
		}
		return route{name: RouteSObjectGet}, "GET,PATCH"
	case n == 1 && s[0] == "composite":
		if is("POST") {
			return route{name: RouteComposite, handler: handleComposite}, ""
		}
		return route{name: RouteComposite}, "POST"
	case n == 2 && s[0] == "composite" && s[1] == "sobjects":
		if is("PATCH") {
			return route{name: RouteCollectionsUpdate, handler: handleCollectionsUpdate, perRecord: true}, ""
		}
		return route{name: RouteCollectionsUpdate}, "PATCH"
	case n == 3 && s[0] == "composite" && s[1] == "sobjects":
		switch m {
		case "GET":
			return route{name: RouteCollectionsGet, handler: handleCollectionsRetrieve, recordIDs: splitIDs(rc.r.URL.Query().Get("ids"))}, ""
		case "POST":
			return route{name: RouteCollectionsGet, handler: handleCollectionsRetrieve}, ""
		}
		return route{name: RouteCollectionsGet}, "GET,POST"
	case n == 1 && (s[0] == "query" || s[0] == "queryAll"):
		if is("GET") {
			return route{name: RouteQuery, handler: handleQuery}, ""
		}
		return route{name: RouteQuery}, "GET"
	case n == 2 && (s[0] == "query" || s[0] == "queryAll"):
		if is("GET") {
			return route{name: RouteQueryMore, handler: handleQueryMore}, ""
		}
		return route{name: RouteQueryMore}, "GET"
	case n == 2 && s[0] == "jobs" && s[1] == "query":
		switch m {
		case "POST":
			return route{name: RouteBulkQueryCreate, handler: handleBulkQueryCreate}, ""
		case "GET":
			return route{name: RouteBulkQueryList, handler: handleBulkQueryList}, ""
		}
		return route{name: RouteBulkQueryCreate}, "GET,POST"
	case n == 3 && s[0] == "jobs" && s[1] == "query":
		switch m {
		case "GET":
			return route{name: RouteBulkQueryGet, handler: handleBulkQueryGet}, ""
		case "PATCH":
			return route{name: RouteBulkQueryAbort, handler: handleBulkAbort}, ""
		case "DELETE":
			return route{name: RouteBulkQueryDelete, handler: handleBulkDelete}, ""
		}
		return route{name: RouteBulkQueryGet}, "GET,PATCH,DELETE"
	case n == 4 && s[0] == "jobs" && s[1] == "query" && s[3] == "results":
		if is("GET") {
			return route{name: RouteBulkQueryResults, handler: handleBulkQueryResults}, ""
		}
		return route{name: RouteBulkQueryResults}, "GET"
	case n == 2 && s[0] == "jobs" && s[1] == "ingest":
		if is("POST") {
			return route{name: RouteBulkIngestCreate, handler: handleIngestCreate}, ""
		}
		return route{name: RouteBulkIngestCreate}, "POST"
	case n == 3 && s[0] == "jobs" && s[1] == "ingest":
		switch m {
		case "GET":
			return route{name: RouteBulkIngestGet, handler: handleIngestGet}, ""
		case "PATCH":
			return route{name: RouteBulkIngestPatch, handler: handleIngestPatch}, ""
		case "DELETE":
			return route{name: RouteBulkIngestDelete, handler: handleBulkDelete}, ""
		}
		return route{name: RouteBulkIngestGet}, "GET,PATCH,DELETE"
	case n == 4 && s[0] == "jobs" && s[1] == "ingest" && s[3] == "batches":
		if is("PUT") {
			return route{name: RouteBulkIngestUpload, handler: handleIngestUpload}, ""
		}
		return route{name: RouteBulkIngestUpload}, "PUT"
	case n == 4 && s[0] == "jobs" && s[1] == "ingest" && (s[3] == "successfulResults" || s[3] == "failedResults" || s[3] == "unprocessedrecords"):
		if is("GET") {
			return route{name: RouteBulkIngestResults, handler: handleIngestResults}, ""
		}
		return route{name: RouteBulkIngestResults}, "GET"
	}
	return route{name: "unknown"}, ""
}

func splitIDs(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
