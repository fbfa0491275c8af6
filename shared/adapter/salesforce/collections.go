package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sort"
	"strconv"

	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

// Collection limits (spec §4).
const (
	MaxCollectionRecords = 200  // records per PATCH /composite/sobjects
	MaxCollectionChunks  = 10   // runs of same-type records per request
	MaxRetrieveIDs       = 2000 // ids per POST /composite/sobjects/{type}
)

const opUpdate = "update opt-out"

// Update is one opt-out write.
type Update struct {
	ID    string // 15 or 18 characters
	Type  string // "Contact" or "Lead"; empty = from the id's key prefix
	Field string // e.g. HasOptedOutOfEmail
	Value bool
}

// Result is the outcome of one Update, in input order.
type Result struct {
	ID      string // 18-character id; the input as given when it was malformed
	Type    string
	Success bool
	Err     *Error // nil on success
	// Duplicate: an earlier input of the same call targeted the same record;
	// both were sent as one record and share this outcome.
	Duplicate bool
	// Superseded: a later input set the same field of the same record to the
	// other value; that later value is what was written.
	Superseded bool
}

// wrec is one record as sent: all inputs for one id merged.
type wrec struct {
	id, typ string
	fields  []fieldValue // usually one
	inputs  []int
	first   int
	reads   []string // fields to read before the write (ReadAndUpdate)
}

func (r *wrec) addRead(name string) {
	for _, f := range r.reads {
		if f == name {
			return
		}
	}
	r.reads = append(r.reads, name)
}

type fieldValue struct {
	name  string
	value bool
}

// set records a field value; the last value for a field wins.
func (r *wrec) set(name string, v bool) {
	for k := range r.fields {
		if r.fields[k].name == name {
			r.fields[k].value = v
			return
		}
	}
	r.fields = append(r.fields, fieldValue{name, v})
}

func (r *wrec) get(name string) bool {
	for _, f := range r.fields {
		if f.name == name {
			return f.value
		}
	}
	return false
}

// UpdateOptOut writes opt-out fields with sObject Collections:
// PATCH /composite/sobjects, allOrNone false, at most 200 records a request,
// records grouped by type (Contacts, then Leads) so no request exceeds the
// 10-chunk rule. Inputs for the same id are merged into one record (duplicate
// ids in one request are unconfirmed behaviour). Results are matched by
// position, as failed items may lack an id.
//
// It returns one Result per input, in input order. The error is non-nil when
// a whole request failed (HTTP error, no answer); the records of that request
// and of every later one, which are then not sent, carry that error too.
func (c *Client) UpdateOptOut(ctx context.Context, updates []Update) ([]Result, error) {
	results, recs := prepareUpdates(opUpdate, updates, nil)
	var callErr *Error
	for _, batch := range splitBatches(recs) {
		if callErr == nil {
			callErr = c.updateBatch(ctx, batch, results)
			if callErr == nil {
				continue
			}
		}
		failBatch(batch, results, callErr)
	}
	if callErr != nil {
		return results, callErr
	}
	return results, nil
}

// failBatch gives every input of batch (failed, or not attempted) err.
func failBatch(batch []*wrec, results []Result, err *Error) {
	for _, r := range batch {
		for _, i := range r.inputs {
			results[i].Success, results[i].Err = false, err
		}
	}
}

// prepareUpdates validates updates, merges inputs for one id into one
// record and sorts the records Contacts, then Leads, then anything else by
// name (input order within a type). read, when set, marks the inputs whose
// record must be read before the write.
func prepareUpdates(op string, updates []Update, read func(i int) bool) ([]Result, []*wrec) {
	results := make([]Result, len(updates))
	byID := make(map[string]*wrec, len(updates))
	var recs []*wrec
	for i, u := range updates {
		results[i] = Result{ID: u.ID, Type: u.Type}
		id, err := sfid.Normalize(u.ID)
		if err != nil {
			e := newError(op, 0, "MALFORMED_ID", err.Error())
			e.Fields = []string{"Id"}
			results[i].Err = e
			continue
		}
		results[i].ID = id
		typ := u.Type
		if typ == "" {
			typ = sfid.ObjectType(id)
			results[i].Type = typ
		}
		switch {
		case typ == "":
			results[i].Err = newError(op, 0, "MALFORMED_ID", "id "+id+" is neither a Contact nor a Lead id and no Type was given")
			continue
		case !validName(typ):
			results[i].Err = invalidArgument(op, "type %q is not an API name", typ)
			continue
		case !validName(u.Field):
			results[i].Err = invalidArgument(op, "field %q is not an API name", u.Field)
			continue
		}
		r := byID[id]
		if r == nil {
			r = &wrec{id: id, typ: typ, first: i}
			byID[id] = r
			recs = append(recs, r)
		} else if r.typ != typ {
			results[i].Err = invalidArgument(op, "id %s given as both %s and %s", id, r.typ, typ)
			continue
		} else {
			results[i].Duplicate = true
		}
		r.set(u.Field, u.Value)
		r.inputs = append(r.inputs, i)
		if read != nil && read(i) {
			r.addRead(u.Field)
		}
	}
	for _, r := range recs {
		for _, i := range r.inputs {
			results[i].Superseded = r.get(updates[i].Field) != updates[i].Value
		}
	}
	sort.SliceStable(recs, func(a, b int) bool {
		ra, rb := typeRank(recs[a].typ), typeRank(recs[b].typ)
		if ra != rb {
			return ra < rb
		}
		if recs[a].typ != recs[b].typ {
			return recs[a].typ < recs[b].typ
		}
		return recs[a].first < recs[b].first
	})
	return results, recs
}

func typeRank(t string) int {
	switch t {
	case sfid.Contact:
		return 0
	case sfid.Lead:
		return 1
	}
	return 2
}

// splitBatches cuts sorted records into requests of at most 200 records and
// 10 same-type runs.
func splitBatches(recs []*wrec) [][]*wrec {
	var out [][]*wrec
	start, chunks := 0, 0
	for i, r := range recs {
		newChunk := i == start || recs[i-1].typ != r.typ
		if i > start && (i-start == MaxCollectionRecords || (newChunk && chunks == MaxCollectionChunks)) {
			out = append(out, recs[start:i])
			start, chunks = i, 0
			newChunk = true
		}
		if newChunk {
			chunks++
		}
	}
	if start < len(recs) {
		out = append(out, recs[start:])
	}
	return out
}

// collectionBody encodes {"allOrNone":false,"records":[…]} directly: ids,
// types and field names were validated as alphanumeric API names, so they
// need no escaping, and a 200-record body costs one buffer.
func collectionBody(batch []*wrec) []byte {
	b := make([]byte, 0, 32+len(batch)*96)
	b = append(b, `{"allOrNone":false,"records":[`...)
	for k, r := range batch {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"attributes":{"type":"`...)
		b = append(b, r.typ...)
		b = append(b, `"},"id":"`...)
		b = append(b, r.id...)
		b = append(b, '"')
		for _, f := range r.fields {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendBool(b, f.value)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

type collectionResult struct {
	ID      string        `json:"id"`
	Success bool          `json:"success"`
	Errors  []sfErrorItem `json:"errors"`
}

// updateBatch sends one collection request and fills the results of its
// records. It returns the request-level error, if any.
func (c *Client) updateBatch(ctx context.Context, batch []*wrec, results []Result) *Error {
	cl := &call{
		op: opUpdate, method: "PATCH", route: "/composite/sobjects", path: "/composite/sobjects",
		body:   collectionBody(batch),
		header: writeHeaders(),
	}
	var out []collectionResult
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return requestLevel(err)
	}
	if len(out) != len(batch) {
		return newError(opUpdate, 200, CodeResultMismatch, "collection answered a different number of results than records sent")
	}
	fillResults(opUpdate, batch, out, results)
	return nil
}

// fillResults gives each input of batch its record's result, matched by
// position.
func fillResults(op string, batch []*wrec, out []collectionResult, results []Result) {
	for k, r := range batch {
		res := out[k]
		var e *Error
		if !res.Success {
			item := sfErrorItem{StatusCode: "", Message: "failed without an error entry"}
			if len(res.Errors) > 0 {
				item = res.Errors[0]
			}
			e = newError(op+" record", 0, item.code(), truncate(item.Message))
			e.Fields = item.Fields
		}
		for _, i := range r.inputs {
			results[i].Success = res.Success
			results[i].Err = e
		}
	}
}

// requestLevel makes sure a failure of a whole request is an *Error (send
// already turned per-record classes into PermanentTenant for it).
func requestLevel(err error) *Error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Op: opUpdate, Code: CodeTransport, Message: err.Error(), Class: Retryable, Err: err}
	}
	return e
}

// writeHeaders are sent with every write: no Lead assignment rules on an
// opt-out update (default TRUE would reassign the Lead).
func writeHeaders() map[string][]string {
	return map[string][]string{"Sforce-Auto-Assign": {"FALSE"}}
}

// UpdateRecord sets fields on one record: PATCH /sobjects/{type}/{id}, 204.
func (c *Client) UpdateRecord(ctx context.Context, sobjectType, id string, fields map[string]any) error {
	const op = "update record"
	id18, err := sfid.Normalize(id)
	if err != nil {
		return newError(op, 0, "MALFORMED_ID", err.Error())
	}
	if !validName(sobjectType) {
		return invalidArgument(op, "type %q is not an API name", sobjectType)
	}
	if len(fields) == 0 {
		return invalidArgument(op, "no fields to update")
	}
	for f := range fields {
		if !validName(f) {
			return invalidArgument(op, "field %q is not an API name", f)
		}
	}
	cl := &call{
		op: op, method: "PATCH",
		route:       "/sobjects/" + sobjectType + "/{id}",
		path:        "/sobjects/" + url.PathEscape(sobjectType) + "/" + id18,
		body:        jsonBody(fields),
		header:      writeHeaders(),
		recordScope: true,
	}
	return c.doJSON(ctx, cl, nil)
}

// Retrieve reads fields of records by id with POST /composite/sobjects/{type}
// (up to 2,000 ids a request). The result is aligned with ids: nil where the
// id is malformed, deleted or not visible (Salesforce answers null).
func (c *Client) Retrieve(ctx context.Context, sobjectType string, ids, fields []string) ([]*Record, error) {
	const op = "retrieve"
	if !validName(sobjectType) {
		return nil, invalidArgument(op, "type %q is not an API name", sobjectType)
	}
	if len(fields) == 0 {
		return nil, invalidArgument(op, "no fields requested")
	}
	for _, f := range fields {
		if !validName(f) {
			return nil, invalidArgument(op, "field %q is not an API name", f)
		}
	}
	out := make([]*Record, len(ids))
	var pos []int // input positions of valid ids
	var valid []string
	for i, id := range ids {
		if id18, err := sfid.Normalize(id); err == nil {
			pos = append(pos, i)
			valid = append(valid, id18)
		}
	}
	for start := 0; start < len(valid); start += MaxRetrieveIDs {
		end := min(start+MaxRetrieveIDs, len(valid))
		cl := &call{
			op: op, method: "POST",
			route: "/composite/sobjects/" + sobjectType,
			path:  "/composite/sobjects/" + url.PathEscape(sobjectType),
			body:  jsonBody(map[string]any{"ids": valid[start:end], "fields": fields}),
		}
		var raw []json.RawMessage
		if err := c.doJSON(ctx, cl, &raw); err != nil {
			return nil, err
		}
		if len(raw) != end-start {
			return nil, newError(op, 200, CodeResultMismatch, "retrieve answered a different number of records than ids sent")
		}
		for k, m := range raw {
			if string(m) == "null" {
				continue
			}
			rec, err := decodeRecord(m)
			if err != nil {
				return nil, &Error{Op: op, Status: 200, Code: CodeNonJSON, Message: "cannot decode record", Class: Retryable, Err: err}
			}
			out[pos[start+k]] = &rec
		}
	}
	return out, nil
}
