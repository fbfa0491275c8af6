package sandbox

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

const (
	maxCollectionRecords = 200
	maxCollectionChunks  = 10
	maxRetrieveIDs       = 2000
)

// saveResult is one element of a collection update answer.
type saveResult struct {
	ID      string      `json:"id,omitempty"`
	Success bool        `json:"success"`
	Errors  []itemError `json:"errors"`
}

// itemError is a per-record error: statusCode, not errorCode (spec §0).
type itemError struct {
	StatusCode string   `json:"statusCode"`
	Message    string   `json:"message"`
	Fields     []string `json:"fields"`
}

// pendingWrite is a collection item that passed validation.
type pendingWrite struct {
	t  objType
	id sfid
	as []assignment
}

func handleCollectionsUpdate(rc *reqCtx) {
	o := rc.o
	data, err := readBody(rc.r)
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", err.Error(), nil)
		return
	}
	var req struct {
		AllOrNone bool              `json:"allOrNone"`
		Records   []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(data, &req); err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "Unable to parse the request body: "+err.Error(), nil)
		return
	}
	o.mu.Lock()
	b := o.cfg.Behavior
	o.mu.Unlock()
	switch n := len(req.Records); {
	case n == 0:
		writeError(rc.w, http.StatusBadRequest, "REQUIRED_FIELD_MISSING", "At least 1 record is required", nil)
		return
	case n > maxCollectionRecords:
		writeError(rc.w, b.ExceededIDLimitStatus, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call", nil)
		return
	}
	rc.call.Records = len(req.Records)

	type item struct {
		body map[string]json.RawMessage
		keys []string
		typ  string
	}
	items := make([]item, len(req.Records))
	chunks, prev := 0, "\x00"
	for i, raw := range req.Records {
		body, keys, err := decodeObject(raw)
		if err != nil {
			writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "records["+strconv.Itoa(i)+"]: "+err.Error(), nil)
			return
		}
		var attrs struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(body["attributes"], &attrs)
		items[i] = item{body: body, keys: keys, typ: attrs.Type}
		if k := strings.ToLower(attrs.Type); k != prev {
			chunks++
			prev = k
		}
	}
	if chunks > maxCollectionChunks {
		writeError(rc.w, http.StatusBadRequest, b.ChunkLimitErrorCode,
			"Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.", nil)
		return
	}

	results := make([]saveResult, len(items))
	pending := make([]*pendingWrite, len(items))
	fail := func(i int, code, msg string, fields []string) {
		if fields == nil {
			fields = []string{}
		}
		results[i] = saveResult{Errors: []itemError{{StatusCode: code, Message: msg, Fields: fields}}}
	}
	seen := map[sfid]bool{}
	for i, it := range items {
		t, ok := typeByName(it.typ)
		if !ok {
			if it.typ == "" {
				fail(i, "INVALID_TYPE", "Must send a concrete entity type.", nil)
			} else {
				fail(i, "INVALID_TYPE", "sObject type '"+it.typ+"' is not supported.", nil)
			}
			continue
		}
		rawID, idKey := "", ""
		for _, k := range it.keys {
			if strings.EqualFold(k, "id") {
				idKey = k
				_ = json.Unmarshal(it.body[k], &rawID)
			}
		}
		if rawID == "" {
			fail(i, "MISSING_ARGUMENT", "Id not specified in an update call", nil)
			continue
		}
		id, ok := parseID(rawID)
		if !ok || id.Prefix() != typePrefixes[t] {
			fail(i, "MALFORMED_ID", t.String()+" ID: id value of incorrect type: "+rawID, []string{"Id"})
			continue
		}
		as, rerr := parseAssignments(o.schemaFor(t), it.body, it.keys, func(k string) bool { return k == "attributes" || k == idKey })
		if rerr != nil {
			fail(i, rerr.code, rerr.msg, rerr.fields)
			continue
		}
		if seen[id] && b.DuplicateIDs != "apply" {
			fail(i, "DUPLICATE_VALUE", "Duplicate id in list: "+id.String(), nil)
			continue
		}
		seen[id] = true
		if f := o.matchRecordFault(RouteCollectionsUpdate, id.String()); f != nil {
			rc.call.FaultID = f.RecordID
			if !sleepCtx(rc.r.Context(), f.Delay) {
				return
			}
			switch {
			case f.DropBeforeWrite:
				dropConnection(rc.w)
				rc.call.Status = 0
				rc.dropAfter = false
				return
			case f.DropAfterWrite:
				rc.dropAfter = true
			case f.Status != 0 || f.ErrorCode != "":
				_, code, msg := o.faultDefaults(f, id.String())
				fail(i, code, msg, nil)
				continue
			}
		}
		pending[i] = &pendingWrite{t: t, id: id, as: as}
	}

	s := o.st
	now := msOf(o.now())
	custom := o.cdcCustom()
	var cdc []cdcChange
	type applied struct {
		p       *pendingWrite
		changed []string
	}
	var done []applied
	s.mu.Lock()
	for i, p := range pending {
		if p == nil {
			continue
		}
		r, found := s.lookup(p.id)
		if !found {
			r = nil
		}
		if rerr := checkWritable(r, b.CollectionsMissingRecordCode, b.ConvertedLeadStatus); rerr != nil {
			fail(i, rerr.code, rerr.msg, rerr.fields)
			pending[i] = nil
		}
	}
	anyFailed := false
	for i := range results {
		if pending[i] == nil {
			anyFailed = true
		}
	}
	leadWritten := false
	for i, p := range pending {
		switch {
		case p == nil:
		case req.AllOrNone && anyFailed:
			fail(i, "ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header", nil)
		default:
			r, _ := s.lookup(p.id)
			before := *r
			done = append(done, applied{p, rc.applyWrite(r, p.as, now)})
			cdc = append(cdc, diffChange(&before, r, custom, true))
			results[i] = saveResult{ID: p.id.String(), Success: true, Errors: []itemError{}}
			leadWritten = leadWritten || p.t == typeLead
		}
	}
	s.mu.Unlock()
	for _, d := range done {
		rc.recordChange(d.p.id.String(), d.p.t.String(), "UPDATE", d.changed, changeOrigin(rc))
	}
	// [inference] One request is one transaction (allOrNone or not), so
	// identical changes to many records echo as one merged event (§9.8).
	rc.commitCDC(cdc)
	rc.call.AssignmentRules = leadWritten && autoAssignRuns(rc.r)
	if rc.dropAfter {
		rc.w.discard = true
	}
	writeJSON(rc.w, http.StatusOK, results)
}

// handleCollectionsRetrieve serves GET ?ids=&fields= and POST {"ids","fields"}:
// an array aligned with ids, null where an id is invalid, of another type,
// missing or deleted.
func handleCollectionsRetrieve(rc *reqCtx) {
	t, ok := typeByName(rc.segs[2])
	if !ok {
		writeError(rc.w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
		return
	}
	var ids, fieldNames []string
	if rc.r.Method == http.MethodPost {
		data, err := readBody(rc.r)
		if err != nil {
			writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", err.Error(), nil)
			return
		}
		var req struct {
			IDs    []string `json:"ids"`
			Fields []string `json:"fields"`
		}
		if err := json.Unmarshal(data, &req); err != nil {
			writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "Unable to parse the request body: "+err.Error(), nil)
			return
		}
		ids, fieldNames = req.IDs, req.Fields
	} else {
		q := rc.r.URL.Query()
		ids, fieldNames = splitIDs(q.Get("ids")), splitIDs(q.Get("fields"))
	}
	if len(ids) == 0 {
		writeError(rc.w, http.StatusBadRequest, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ids]", []string{"ids"})
		return
	}
	if len(fieldNames) == 0 {
		writeError(rc.w, http.StatusBadRequest, "REQUIRED_FIELD_MISSING", "Required fields are missing: [fields]", []string{"fields"})
		return
	}
	if len(ids) > maxRetrieveIDs {
		writeError(rc.w, http.StatusBadRequest, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 2000 records into this call", nil)
		return
	}
	fields, rerr := selectFields(rc.o.schemaFor(t), fieldNames)
	if rerr != nil {
		writeError(rc.w, rerr.status, rerr.code, rerr.msg, nil)
		return
	}
	out := make([]any, len(ids))
	s := rc.o.st
	s.mu.RLock()
	for i, raw := range ids {
		id, ok := parseID(raw)
		if !ok || id.Prefix() != typePrefixes[t] {
			continue
		}
		if r, found := s.lookup(id); found && !r.has(flagDeleted) {
			out[i] = renderRecord(r, fields, rc.version)
		}
	}
	s.mu.RUnlock()
	writeJSON(rc.w, http.StatusOK, out)
}
