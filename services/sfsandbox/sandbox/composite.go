package sandbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// RouteComposite is POST /composite (spec §11): one API call running up to
// 25 subrequests. Faults on it hit the whole request; faults on a
// subrequest's own route (RouteQuery, RouteCollectionsUpdate, …) hit that
// subrequest inside it.
const RouteComposite = "composite"

const (
	maxCompositeSubrequests = 25
	// maxCompositeCollections counts sObject Collections and query subrequests.
	maxCompositeCollections = 5
	// codeCompositeInput is the emulator's errorCode for a refused composite
	// request: the spec gives the status (400), not the code.
	codeCompositeInput = "INVALID_API_INPUT"
	codeHalted         = "PROCESSING_HALTED"
	msgHalted          = "The transaction was rolled back since another operation in the same transaction failed."
)

type subRequest struct {
	Method      string            `json:"method"`
	URL         string            `json:"url"`
	ReferenceID string            `json:"referenceId"`
	Body        json.RawMessage   `json:"body,omitempty"`
	HTTPHeaders map[string]string `json:"httpHeaders,omitempty"`
}

type subResponse struct {
	Body           json.RawMessage   `json:"body"`
	HTTPHeaders    map[string]string `json:"httpHeaders"`
	HTTPStatusCode int               `json:"httpStatusCode"`
	ReferenceID    string            `json:"referenceId"`
}

var (
	reReferenceID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_]*$`)
	reReference   = regexp.MustCompile(`@\{([A-Za-z0-9][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+|\[[0-9]+\])*)\}`)
	reRefStep     = regexp.MustCompile(`\.[A-Za-z0-9_]+|\[[0-9]+\]`)
)

// compositeTx is what a composite request's writes did, so allOrNone can
// undo them: each record's first pre-image, and the change events held
// back until the request commits.
type compositeTx struct {
	before  map[sfid]rec
	order   []sfid
	changes []Change
	cdc     []cdcChange
	origin  string // the CDC changeOrigin of the request
}

// applyWrite applies as to r (the store's lock held), keeping r's
// pre-image when the write belongs to a composite request.
func (rc *reqCtx) applyWrite(r *rec, as []assignment, now int64) []string {
	if tx := rc.tx; tx != nil {
		if _, ok := tx.before[r.id]; !ok {
			tx.before[r.id] = *r
			tx.order = append(tx.order, r.id)
		}
	}
	return apply(r, as, now)
}

// recordChange feeds the change feed, or holds the event back until the
// composite request it belongs to commits.
func (rc *reqCtx) recordChange(id, typ, kind string, fields []string, origin string) {
	if rc.tx != nil {
		rc.tx.changes = append(rc.tx.changes, Change{RecordID: id, Type: typ, ChangeType: kind, ChangedFields: fields, Origin: origin})
		return
	}
	rc.o.recordChange(id, typ, kind, fields, origin)
}

// commitCDC publishes a write's change events, or holds them back until
// the composite request it belongs to commits as one transaction.
func (rc *reqCtx) commitCDC(changes []cdcChange) {
	origin := rc.o.cdcOrigin("rest", rc.version, rc.call.Client)
	if rc.tx != nil {
		rc.tx.cdc, rc.tx.origin = append(rc.tx.cdc, changes...), origin
		return
	}
	rc.o.commitCDC(origin, changes)
}

// subWriter buffers a subrequest's answer; a connection drop asked for
// inside it (a per-record fault) drops the composite's connection.
type subWriter struct {
	outer  http.ResponseWriter
	header http.Header
	buf    bytes.Buffer
	status int
	// hijacked: the subrequest dropped the composite's connection.
	hijacked bool
}

func (w *subWriter) Header() http.Header { return w.header }
func (w *subWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *subWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.buf.Write(b)
}
func (w *subWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return http.NewResponseController(w.outer).Hijack()
}

// collectionOrQuery tells whether a subrequest path (below the version)
// counts against the 5 sObject Collections or query subrequests.
func collectionOrQuery(segs []string) bool {
	return len(segs) > 0 && (segs[0] == "query" || segs[0] == "queryAll" ||
		len(segs) >= 2 && segs[0] == "composite" && segs[1] == "sobjects")
}

// allowedInComposite: sObject resources, /query, /queryAll and sObject
// Collections (spec §11).
func allowedInComposite(segs []string) bool {
	return len(segs) > 0 && (segs[0] == "sobjects" || collectionOrQuery(segs))
}

// splitSubURL checks a subrequest url (/services/data/vXX.X/...) and
// returns its version, path segments and raw query.
func splitSubURL(u string) (version string, segs []string, rawQuery string, ok bool) {
	path, rawQuery, _ := strings.Cut(u, "?")
	rest, found := strings.CutPrefix(path, "/services/data/v")
	if !found {
		return "", nil, "", false
	}
	version, sub, _ := strings.Cut(rest, "/")
	if sub == "" {
		return "", nil, "", false
	}
	return version, strings.Split(strings.TrimSuffix(sub, "/"), "/"), rawQuery, true
}

func handleComposite(rc *reqCtx) {
	o := rc.o
	data, err := readBody(rc.r)
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", err.Error(), nil)
		return
	}
	var req struct {
		AllOrNone          bool         `json:"allOrNone"`
		CollateSubrequests *bool        `json:"collateSubrequests"`
		CompositeRequest   []subRequest `json:"compositeRequest"`
	}
	if err := json.Unmarshal(data, &req); err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "Unable to parse the request body: "+err.Error(), nil)
		return
	}
	subs := req.CompositeRequest
	refuse := func(msg string) { writeError(rc.w, http.StatusBadRequest, codeCompositeInput, msg, nil) }
	switch {
	case len(subs) == 0:
		refuse("compositeRequest must hold at least one subrequest")
		return
	case len(subs) > maxCompositeSubrequests:
		refuse(fmt.Sprintf("The number of subrequests (%d) exceeds the limit of %d", len(subs), maxCompositeSubrequests))
		return
	}
	// collateSubrequests defaults to true from v49.
	collate := req.CollateSubrequests == nil || *req.CollateSubrequests
	if req.CollateSubrequests == nil {
		if v, err := strconv.ParseFloat(rc.version, 64); err == nil && v < 49 {
			collate = false
		}
	}
	refs, heavy := map[string]bool{}, 0
	for i, s := range subs {
		if !slices.Contains([]string{"GET", "POST", "PUT", "PATCH", "DELETE"}, s.Method) {
			refuse(fmt.Sprintf("compositeRequest[%d]: method %q is not one of GET, POST, PUT, PATCH, DELETE", i, s.Method))
			return
		}
		if !reReferenceID.MatchString(s.ReferenceID) {
			refuse(fmt.Sprintf("compositeRequest[%d]: invalid referenceId %q", i, s.ReferenceID))
			return
		}
		if refs[s.ReferenceID] {
			refuse(fmt.Sprintf("compositeRequest[%d]: duplicate referenceId %q", i, s.ReferenceID))
			return
		}
		refs[s.ReferenceID] = true
		for k := range s.HTTPHeaders {
			if strings.EqualFold(k, "Accept") || strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Content-Type") {
				refuse(fmt.Sprintf("compositeRequest[%d]: the %s header cannot be set on a subrequest", i, k))
				return
			}
		}
		_, segs, _, ok := splitSubURL(s.URL)
		if !ok {
			refuse(fmt.Sprintf("compositeRequest[%d]: url must start with /services/data/vXX.X/", i))
			return
		}
		if !allowedInComposite(segs) {
			refuse(fmt.Sprintf("compositeRequest[%d]: %s is not supported in a composite request", i, s.URL))
			return
		}
		if collectionOrQuery(segs) {
			heavy++
		}
	}
	if heavy > maxCompositeCollections {
		refuse(fmt.Sprintf("The number of sObject Collections and query subrequests (%d) exceeds the limit of %d", heavy, maxCompositeCollections))
		return
	}

	// Collated, independent subrequests may run in any order (only
	// references order them): they run last-first, so a client that relies
	// on request order without collateSubrequests:false sees it fail here.
	order := make([]int, 0, len(subs))
	if collate {
		var later []int
		for i := len(subs) - 1; i >= 0; i-- {
			if len(subs[i].HTTPHeaders) == 0 && !reReference.Match([]byte(subs[i].URL)) && !reReference.Match(subs[i].Body) {
				order = append(order, i)
			} else {
				later = append(later, i)
			}
		}
		slices.Reverse(later)
		order = append(order, later...)
	} else {
		for i := range subs {
			order = append(order, i)
		}
	}

	var tx *compositeTx
	if req.AllOrNone {
		tx = &compositeTx{before: map[sfid]rec{}}
	}
	out := make([]subResponse, len(subs))
	done := make([]bool, len(subs))
	bodies := map[string]any{} // referenceId → decoded answer, for @{ref.path}
	failed := -1
	for _, i := range order {
		s := subs[i]
		out[i] = subResponse{HTTPHeaders: map[string]string{}, ReferenceID: s.ReferenceID}
		if failed >= 0 {
			continue // halted below
		}
		status, body, gone := o.runSubrequest(rc, s, req.AllOrNone, tx, bodies)
		if gone {
			return // the connection was dropped mid-request
		}
		out[i].HTTPStatusCode, out[i].Body, done[i] = status, body, true
		var decoded any
		if json.Unmarshal(body, &decoded) == nil {
			bodies[s.ReferenceID] = decoded
		}
		if req.AllOrNone && subFailed(status, body) {
			failed = i
		}
	}
	halted, _ := json.Marshal([]apiError{{Message: msgHalted, ErrorCode: codeHalted}})
	if failed >= 0 {
		// allOrNone: undo every write and answer every other subrequest 400.
		s := o.st
		s.mu.Lock()
		for _, id := range tx.order {
			if r, ok := s.lookup(id); ok {
				*r = tx.before[id]
			}
		}
		s.mu.Unlock()
		tx.changes, tx.cdc = nil, nil
		for i := range out {
			if i != failed {
				out[i].HTTPStatusCode, out[i].Body = http.StatusBadRequest, halted
			}
		}
	}
	for i := range out {
		if out[i].Body == nil {
			out[i].HTTPStatusCode, out[i].Body = http.StatusBadRequest, halted
		}
	}
	if tx != nil {
		for _, c := range tx.changes {
			o.recordChange(c.RecordID, c.Type, c.ChangeType, c.ChangedFields, c.Origin)
		}
		o.commitCDC(tx.origin, tx.cdc)
	}
	if rc.dropAfter {
		rc.w.discard = true
	}
	writeJSON(rc.w, http.StatusOK, map[string]any{"compositeResponse": out})
}

// subFailed tells whether a subrequest failed for allOrNone: an error
// status, or a collection answer with a failed record.
func subFailed(status int, body []byte) bool {
	if status >= 400 {
		return true
	}
	var results []struct {
		Success *bool `json:"success"`
	}
	if json.Unmarshal(body, &results) != nil {
		return false
	}
	for _, r := range results {
		if r.Success != nil && !*r.Success {
			return true
		}
	}
	return false
}

// runSubrequest runs one subrequest through the data route it names, in
// the composite's API call (nothing counted again, no latency again). gone
// reports that it dropped the composite's connection.
func (o *Org) runSubrequest(rc *reqCtx, s subRequest, allOrNone bool, tx *compositeTx, bodies map[string]any) (status int, body []byte, gone bool) {
	errBody := func(code, msg string) []byte {
		b, _ := json.Marshal([]apiError{{Message: msg, ErrorCode: code}})
		return b
	}
	u, okURL := resolveReferences(s.URL, bodies, true)
	reqBody, okBody := []byte(s.Body), true
	if len(s.Body) > 0 {
		var b string
		b, okBody = resolveReferences(string(s.Body), bodies, false)
		reqBody = []byte(b)
	}
	if !okURL || !okBody {
		// A dependent of a failed or missing subrequest is skipped.
		return http.StatusBadRequest, errBody(codeHalted, "Invalid reference specified. No value for the reference found in an earlier subrequest of this request."), false
	}
	version, segs, rawQuery, _ := splitSubURL(u)
	o.mu.Lock()
	served := slices.Contains(o.cfg.APIVersions, version)
	o.mu.Unlock()
	if !served {
		return http.StatusNotFound, errBody("NOT_FOUND", msgNotFound), false
	}
	if allOrNone && len(segs) == 2 && segs[0] == "composite" && s.Method == "PATCH" {
		// The outer allOrNone overrides the collection's own.
		var m map[string]json.RawMessage
		if json.Unmarshal(reqBody, &m) == nil {
			m["allOrNone"] = json.RawMessage("true")
			reqBody, _ = json.Marshal(m)
		}
	}
	target := "/services/data/v" + version + "/" + strings.Join(segs, "/")
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	r, err := http.NewRequestWithContext(rc.r.Context(), s.Method, target, bytes.NewReader(reqBody))
	if err != nil {
		return http.StatusBadRequest, errBody(codeCompositeInput, "invalid subrequest url"), false
	}
	for _, k := range []string{"Sforce-Auto-Assign", "Sforce-Call-Options", "Sforce-Query-Options"} {
		if v := rc.r.Header.Get(k); v != "" {
			r.Header.Set(k, v)
		}
	}
	for k, v := range s.HTTPHeaders {
		r.Header.Set(k, v)
	}
	r.Header.Set("Content-Type", "application/json")
	sw := &subWriter{outer: rc.w.ResponseWriter, header: http.Header{}}
	rec := &recorder{ResponseWriter: sw}
	call := &Call{Method: s.Method, Path: r.URL.Path, AutoAssign: r.Header.Get("Sforce-Auto-Assign"), Client: callClient(r), At: o.now()}
	sub := &reqCtx{o: o, w: rec, r: r, version: version, segs: segs, call: call, tx: tx}
	rt, allowed := o.matchRoute(sub)
	call.Route = rt.name
	defer func() {
		if call.Status == 0 && !sw.hijacked {
			call.Status = rec.status
		}
		rc.call.Subrequests = append(rc.call.Subrequests, *call)
		rc.call.Records += call.Records
		rc.call.AssignmentRules = rc.call.AssignmentRules || call.AssignmentRules
	}()
	if rt.handler == nil {
		if allowed != "" {
			return http.StatusMethodNotAllowed, errBody("METHOD_NOT_ALLOWED", "HTTP Method '"+s.Method+"' not allowed. Allowed are "+allowed), false
		}
		return http.StatusNotFound, errBody("NOT_FOUND", msgNotFound), false
	}
	if len(rt.recordIDs) == 1 {
		sub.recordID = rt.recordIDs[0]
		if id, ok := To18(sub.recordID); ok {
			sub.recordID = id
		}
	}
	// A fault on the subrequest's own route hits it here (an edge page has
	// no meaning inside a composite answer, so HTML faults stay call-level).
	if f := o.matchFault(rt.name, rt.recordIDs); f != nil && !f.HTML {
		if o.applyCallFault(rec, r, f, call, sub) {
			if sw.hijacked {
				rc.call.Status = 0
				return 0, nil, true
			}
			return rec.status, sw.buf.Bytes(), false
		}
	}
	rt.handler(sub)
	if sw.hijacked {
		rc.call.Status = 0
		return 0, nil, true
	}
	if sub.dropAfter {
		// The write is applied; the composite's answer is lost.
		rc.dropAfter = true
	}
	status = rec.status
	if status == 0 {
		status = http.StatusOK
	}
	body = bytes.TrimSpace(sw.buf.Bytes())
	if len(body) == 0 {
		body = []byte("null")
	}
	return status, body, false
}

// resolveReferences replaces each @{ref.path} in s by the scalar it names
// in an earlier answer (URL-escaped in a url). ok is false when one does
// not resolve: the subrequest depends on one that failed or is missing.
func resolveReferences(s string, bodies map[string]any, inURL bool) (string, bool) {
	ok := true
	out := reReference.ReplaceAllStringFunc(s, func(m string) string {
		parts := reReference.FindStringSubmatch(m)
		v, found := bodies[parts[1]]
		if !found {
			ok = false
			return m
		}
		for _, step := range reRefStep.FindAllString(parts[2], -1) {
			switch {
			case strings.HasPrefix(step, "."):
				obj, isObj := v.(map[string]any)
				if !isObj {
					ok = false
					return m
				}
				v, found = obj[step[1:]] // case-sensitive, as documented
			default:
				arr, isArr := v.([]any)
				n, _ := strconv.Atoi(step[1 : len(step)-1])
				if !isArr || n >= len(arr) {
					ok = false
					return m
				}
				v, found = arr[n], true
			}
			if !found {
				ok = false
				return m
			}
		}
		var text string
		switch x := v.(type) {
		case string:
			text = x
		case bool:
			text = strconv.FormatBool(x)
		case float64:
			text = strconv.FormatFloat(x, 'f', -1, 64)
		default: // objects, arrays, null: only scalars are referenceable
			ok = false
			return m
		}
		if inURL {
			return strings.ReplaceAll(text, " ", "%20")
		}
		// Inside a JSON string: escape as JSON string content.
		b, _ := json.Marshal(text)
		return string(b[1 : len(b)-1])
	})
	return out, ok
}
