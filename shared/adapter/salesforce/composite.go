package salesforce

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
)

// Composite limits (spec §11).
const (
	MaxCompositeSubrequests = 25
	// MaxCompositeCollections counts sObject Collections and query subrequests.
	MaxCompositeCollections = 5
)

const opReadUpdate = "read and update opt-out"

// ReadUpdate is one write of ReadAndUpdate; Read asks for the value its
// record's field held just before the write.
type ReadUpdate struct {
	Update
	Read bool
}

// ReadResult is the outcome of one ReadUpdate: the write's Result and, for
// a Read, the value read just before the write (Before; nil when unknown:
// the read failed (ReadErr), or the record was not returned, being deleted
// or not visible).
type ReadResult struct {
	Result
	Before  *bool
	ReadErr *Error
}

// ReadAndUpdate reads fields and then writes them, each batch in one
// POST /composite: one `/query` subrequest per type to read (SELECT Id,
// <fields> FROM <type> WHERE Id IN (…)), then one PATCH /composite/sobjects
// subrequest with the records, executed in that order (collateSubrequests
// false) and counted as one API call. allOrNone is false, so the read and
// the write answer on their own: a failed read leaves Before unknown and
// the write still stands. Salesforce has no "write only if the field is X"
// (spec §11), so every record is written whatever the read found.
//
// Batches follow UpdateOptOut's (200 records, 10 type chunks), cut further
// so that no composite holds more than 4 queries besides its write (5
// collection or query subrequests at most). A query names at most 200 ids
// (about 5 KB of SOQL, far below the 100,000-character limit and, encoded,
// below even the 16,384-byte URI cap of a GET /query).
//
// It returns one ReadResult per input, in input order. The error is
// non-nil when a whole request failed (HTTP error, no answer, or the write
// subrequest refused as a whole): its records and those of every later
// request, then not sent, carry it. A request without an answer may have
// been applied.
func (c *Client) ReadAndUpdate(ctx context.Context, updates []ReadUpdate) ([]ReadResult, error) {
	plain := make([]Update, len(updates))
	for i, u := range updates {
		plain[i] = u.Update
	}
	results, recs := prepareUpdates(opReadUpdate, plain, func(i int) bool { return updates[i].Read })
	before := make([]*bool, len(updates))
	readErrs := make([]*Error, len(updates))
	var callErr *Error
	for _, batch := range splitComposite(splitBatches(recs)) {
		if callErr == nil {
			callErr = c.compositeBatch(ctx, batch, plain, results, before, readErrs)
			if callErr == nil {
				continue
			}
		}
		failBatch(batch, results, callErr)
	}
	out := make([]ReadResult, len(updates))
	for i := range out {
		out[i] = ReadResult{Result: results[i]}
		if updates[i].Read {
			out[i].Before, out[i].ReadErr = before[i], readErrs[i]
		}
	}
	if callErr != nil {
		return out, callErr
	}
	return out, nil
}

// splitComposite cuts collection batches at type boundaries so that each
// holds records of at most MaxCompositeCollections-1 types to read.
func splitComposite(batches [][]*wrec) [][]*wrec {
	var out [][]*wrec
	for _, b := range batches {
		start, types := 0, 0
		for i, r := range b {
			newType := i == 0 || b[i-1].typ != r.typ
			if newType && hasReads(b, i) {
				if types == MaxCompositeCollections-1 {
					out = append(out, b[start:i])
					start, types = i, 0
				}
				types++
			}
		}
		out = append(out, b[start:])
	}
	return out
}

// hasReads tells whether the run of same-type records starting at i has
// one to read.
func hasReads(b []*wrec, i int) bool {
	for j := i; j < len(b) && b[j].typ == b[i].typ; j++ {
		if len(b[j].reads) > 0 {
			return true
		}
	}
	return false
}

type subResponse struct {
	Body           json.RawMessage `json:"body"`
	HTTPStatusCode int             `json:"httpStatusCode"`
	ReferenceID    string          `json:"referenceId"`
}

type readQuery struct {
	ref    string
	typ    string
	fields []string
}

// compositeBody encodes the batch's reads and its write. The ids, types
// and fields were validated as API names: they need no JSON escaping.
func (c *Client) compositeBody(batch []*wrec) ([]byte, []readQuery) {
	var queries []readQuery
	var ids [][]string
	for _, r := range batch {
		if len(r.reads) == 0 {
			continue
		}
		if len(queries) == 0 || queries[len(queries)-1].typ != r.typ {
			queries = append(queries, readQuery{ref: "read" + r.typ, typ: r.typ, fields: []string{"Id"}})
			ids = append(ids, nil)
		}
		q := &queries[len(queries)-1]
		for _, f := range r.reads {
			if !containsFold(q.fields, f) {
				q.fields = append(q.fields, f)
			}
		}
		ids[len(ids)-1] = append(ids[len(ids)-1], "'"+r.id+"'")
	}
	base := "/services/data/" + c.s.apiVersion
	b := make([]byte, 0, 256+len(batch)*128)
	b = append(b, `{"allOrNone":false,"collateSubrequests":false,"compositeRequest":[`...)
	for k, q := range queries {
		soql := "SELECT " + strings.Join(q.fields, ",") + " FROM " + q.typ + " WHERE Id IN (" + strings.Join(ids[k], ",") + ")"
		b = append(b, `{"method":"GET","referenceId":"`...)
		b = append(b, q.ref...)
		b = append(b, `","url":"`...)
		b = append(b, base+"/query?q="+url.QueryEscape(soql)...)
		b = append(b, `"},`...)
	}
	// Sforce-Auto-Assign goes on the subrequest too: whether a composite's
	// headers reach its subrequests is not documented.
	b = append(b, `{"method":"PATCH","referenceId":"write","url":"`...)
	b = append(b, base+`/composite/sobjects","httpHeaders":{"Sforce-Auto-Assign":"FALSE"},"body":`...)
	b = append(b, collectionBody(batch)...)
	b = append(b, "}]}"...)
	return b, queries
}

// compositeBatch sends one composite request and fills the results of its
// records (and, for reads, before and readErrs). It returns the
// request-level error, if any.
func (c *Client) compositeBatch(ctx context.Context, batch []*wrec, updates []Update, results []Result, before []*bool, readErrs []*Error) *Error {
	body, queries := c.compositeBody(batch)
	cl := &call{op: opReadUpdate, method: "POST", route: "/composite", path: "/composite", body: body, header: writeHeaders()}
	var out struct {
		CompositeResponse []subResponse `json:"compositeResponse"`
	}
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return requestLevel(err)
	}
	byRef := make(map[string]subResponse, len(out.CompositeResponse))
	for _, s := range out.CompositeResponse {
		byRef[s.ReferenceID] = s
	}
	w, ok := byRef["write"]
	if !ok || len(out.CompositeResponse) != len(queries)+1 {
		return newError(opReadUpdate, 200, CodeResultMismatch, "composite answered other subrequests than were sent")
	}
	if w.HTTPStatusCode >= 300 {
		return subrequestError(opReadUpdate, w)
	}
	var saves []collectionResult
	if err := json.Unmarshal(w.Body, &saves); err != nil {
		return &Error{Op: opReadUpdate, Status: 200, Code: CodeNonJSON, Message: "cannot decode the write's answer", Class: Retryable, Err: err}
	}
	if len(saves) != len(batch) {
		return newError(opReadUpdate, 200, CodeResultMismatch, "collection answered a different number of results than records sent")
	}
	fillResults(opReadUpdate, batch, saves, results)

	for _, q := range queries {
		values, qerr := readValues(q, byRef[q.ref])
		for _, r := range batch {
			if r.typ != q.typ || len(r.reads) == 0 {
				continue
			}
			for _, i := range r.inputs {
				if qerr != nil {
					readErrs[i] = qerr
					continue
				}
				if v, ok := values[r.id].Get(updates[i].Field); ok {
					if b, isBool := v.(bool); isBool {
						before[i] = &b
					}
				}
			}
		}
	}
	return nil
}

// readValues decodes a read subrequest's answer by record id. A record
// not returned (deleted, not visible, or beyond a first page no single
// call follows) is absent: its value stays unknown.
func readValues(q readQuery, s subResponse) (map[string]Record, *Error) {
	if s.HTTPStatusCode >= 300 {
		return nil, subrequestError("read "+q.typ, s)
	}
	var page struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(s.Body, &page); err != nil {
		return nil, &Error{Op: "read " + q.typ, Status: 200, Code: CodeNonJSON, Message: "cannot decode the read's answer", Class: Retryable, Err: err}
	}
	out := make(map[string]Record, len(page.Records))
	for _, raw := range page.Records {
		rec, err := decodeRecord(raw)
		if err != nil {
			return nil, &Error{Op: "read " + q.typ, Status: 200, Code: CodeNonJSON, Message: "cannot decode record", Class: Retryable, Err: err}
		}
		out[rec.ID] = rec
	}
	return out, nil
}

// subrequestError reads a subrequest's error answer like an HTTP one. A
// subrequest is about no single record: a per-record class becomes the
// tenant's (errorFromResponse's rule).
func subrequestError(op string, s subResponse) *Error {
	e := parseErrorBody(op, s.HTTPStatusCode, "application/json", s.Body)
	if e.Class == PermanentRecord {
		e.Class = PermanentTenant
	}
	return e
}
