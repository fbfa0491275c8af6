package salesforce

import (
	"context"
	"encoding/json"
	"iter"
	"net/url"
	"strconv"
	"strings"

	"github.com/optout-sync/optout-sync/shared/domain/sfid"
)

// Record is one sObject row from a query or retrieve.
type Record struct {
	Type   string         // from attributes.type
	ID     string         // the Id field when selected (18 characters)
	Fields map[string]any // every selected field as decoded JSON, without attributes
}

// Get returns a field by API name (case-insensitive, as in Salesforce).
func (r Record) Get(field string) (any, bool) {
	if v, ok := r.Fields[field]; ok {
		return v, true
	}
	for k, v := range r.Fields {
		if strings.EqualFold(k, field) {
			return v, true
		}
	}
	return nil, false
}

// Bool returns a checkbox field; false when absent or not a boolean.
func (r Record) Bool(field string) bool {
	v, _ := r.Get(field)
	b, _ := v.(bool)
	return b
}

// String returns a text field; "" when absent or null.
func (r Record) String(field string) string {
	v, _ := r.Get(field)
	s, _ := v.(string)
	return s
}

func decodeRecord(raw json.RawMessage) (Record, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return Record{}, err
	}
	rec := Record{Fields: m}
	if attrs, ok := m["attributes"].(map[string]any); ok {
		rec.Type, _ = attrs["type"].(string)
		delete(m, "attributes")
	}
	if id, ok := rec.Get("Id"); ok {
		rec.ID, _ = id.(string)
	}
	return rec, nil
}

type queryOpts struct {
	batchSize int
	all       bool
}

// QueryOption tunes Query and QueryIDs.
type QueryOption func(*queryOpts)

// WithBatchSize asks for pages of n records (200..2000) via
// Sforce-Query-Options; Salesforce may still choose another size.
func WithBatchSize(n int) QueryOption { return func(o *queryOpts) { o.batchSize = n } }

// IncludeDeleted uses /queryAll, which also returns deleted and archived rows.
func IncludeDeleted() QueryOption { return func(o *queryOpts) { o.all = true } }

type queryPage struct {
	TotalSize      int               `json:"totalSize"`
	Done           bool              `json:"done"`
	NextRecordsURL string            `json:"nextRecordsUrl"`
	Records        []json.RawMessage `json:"records"`
}

// Query runs a SOQL query and yields its records, following nextRecordsUrl
// page by page; only one page is held at a time. An error is yielded once,
// as the last element. A token that expires between pages is refreshed once
// (see send) and the page re-read.
func (c *Client) Query(ctx context.Context, soql string, opts ...QueryOption) iter.Seq2[Record, error] {
	var o queryOpts
	for _, opt := range opts {
		opt(&o)
	}
	resource := "/query"
	if o.all {
		resource = "/queryAll"
	}
	var header map[string][]string
	if o.batchSize > 0 {
		// Salesforce accepts 200..2000; outside that it picks its own size.
		o.batchSize = min(max(o.batchSize, 200), 2000)
		header = map[string][]string{"Sforce-Query-Options": {"batchSize=" + strconv.Itoa(o.batchSize)}}
	}
	return func(yield func(Record, error) bool) {
		cl := &call{op: "query", method: "GET", route: resource, path: resource,
			rawQuery: "q=" + url.QueryEscape(soql), header: header}
		for {
			var page queryPage
			if err := c.doJSON(ctx, cl, &page); err != nil {
				yield(Record{}, err)
				return
			}
			for _, raw := range page.Records {
				rec, err := decodeRecord(raw)
				if err != nil {
					yield(Record{}, &Error{Op: "query", Status: 200, Code: CodeNonJSON, Message: "cannot decode record", Class: Retryable, Err: err})
					return
				}
				if !yield(rec, nil) {
					return
				}
			}
			if page.Done {
				return
			}
			if page.NextRecordsURL == "" {
				yield(Record{}, newError("query", 200, CodeResultMismatch, "page not done but without nextRecordsUrl"))
				return
			}
			// The locator is opaque; it names the cursor, not records.
			cl = &call{op: "query more", method: "GET", route: resource + "/{locator}",
				absPath: page.NextRecordsURL, header: header}
		}
	}
}

// QueryIDs selects fields of the records with the given ids,
// "SELECT f FROM type WHERE Id IN ('…',…)", in as few queries as the GET URI
// cap allows: each query's full encoded URL stays within MaxURILength
// (16,384 bytes). Ids are normalised to 18 characters and deduplicated; a
// malformed id fails the whole call before anything is sent.
func (c *Client) QueryIDs(ctx context.Context, sobjectType string, fields, ids []string, opts ...QueryOption) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		const op = "query ids"
		chunks, err := c.idChunks(ctx, op, sobjectType, fields, ids)
		if err != nil {
			yield(Record{}, err)
			return
		}
		for _, soql := range chunks {
			for rec, err := range c.Query(ctx, soql, opts...) {
				if !yield(rec, err) || err != nil {
					return
				}
			}
		}
	}
}

// idChunks builds the SOQL statements of QueryIDs. QueryEscape works byte by
// byte, so the escaped length of the statement is the sum of its parts'.
func (c *Client) idChunks(ctx context.Context, op, sobjectType string, fields, ids []string) ([]string, error) {
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
	seen := make(map[string]bool, len(ids))
	norm := make([]string, 0, len(ids))
	for _, id := range ids {
		id18, err := sfid.Normalize(id)
		if err != nil {
			e := newError(op, 0, "MALFORMED_ID", err.Error())
			e.Fields = []string{"Id"}
			return nil, e
		}
		if !seen[id18] {
			seen[id18] = true
			norm = append(norm, id18)
		}
	}
	if len(norm) == 0 {
		return nil, nil
	}
	lits := make([]string, len(norm))
	for i, id := range norm {
		lits[i] = "'" + id + "'"
	}
	prefix := "SELECT " + strings.Join(fields, ",") + " FROM " + sobjectType + " WHERE Id IN ("
	return c.inChunks(ctx, op, prefix, ")", len(fields), lits)
}

// inChunks cuts "prefix lit,lit,… suffix" into statements whose encoded GET
// URL each stays within the URI cap. QueryEscape works byte by byte, so the
// escaped length of a statement is the sum of its parts'.
func (c *Client) inChunks(ctx context.Context, op, prefix, suffix string, nfields int, lits []string) ([]string, error) {
	sess, err := c.tokens.get(ctx)
	if err != nil {
		return nil, withOp(op, err)
	}
	escLen := func(s string) int { return len(url.QueryEscape(s)) }
	fixed := len(c.dataBase(sess)+"/query?q=") + escLen(prefix) + escLen(suffix)
	comma := escLen(",")

	var out []string
	var b strings.Builder
	size, n := 0, 0
	flush := func() {
		b.WriteString(suffix)
		out = append(out, b.String())
		b.Reset()
		n = 0
	}
	for _, lit := range lits {
		add := escLen(lit)
		if n > 0 {
			add += comma
		}
		if n > 0 && size+add > c.s.maxURI {
			flush()
			add = escLen(lit)
		}
		if n == 0 {
			size = fixed
			b.WriteString(prefix)
			if size+add > c.s.maxURI {
				return nil, invalidArgument(op, "query of %d fields does not fit the %d-byte URI cap", nfields, c.s.maxURI)
			}
		} else {
			b.WriteString(",")
		}
		b.WriteString(lit)
		size += add
		n++
	}
	flush()
	return out, nil
}

// QueryEmails selects fields of the records of sobjectType whose Email is
// one of emails, "SELECT f FROM type WHERE Email IN ('…',…) [AND and]" (spec
// §5; Salesforce compares text without regard to case), in as few queries as
// the GET URI cap allows. Empty addresses are skipped. and, when not empty,
// is a further condition of ours (never user input).
func (c *Client) QueryEmails(ctx context.Context, sobjectType string, fields, emails []string, and string, opts ...QueryOption) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		const op = "query emails"
		if !validName(sobjectType) {
			yield(Record{}, invalidArgument(op, "type %q is not an API name", sobjectType))
			return
		}
		for _, f := range fields {
			if !validName(f) {
				yield(Record{}, invalidArgument(op, "field %q is not an API name", f))
				return
			}
		}
		seen := map[string]bool{}
		var lits []string
		for _, e := range emails {
			k := strings.ToLower(strings.TrimSpace(e))
			if k == "" || seen[k] {
				continue
			}
			seen[k] = true
			lits = append(lits, soqlString(strings.TrimSpace(e)))
		}
		if len(lits) == 0 || len(fields) == 0 {
			return
		}
		suffix := ")"
		if and != "" {
			suffix += " AND " + and
		}
		chunks, err := c.inChunks(ctx, op, "SELECT "+strings.Join(fields, ",")+" FROM "+sobjectType+" WHERE Email IN (", suffix, len(fields), lits)
		if err != nil {
			yield(Record{}, err)
			return
		}
		for _, soql := range chunks {
			for rec, err := range c.Query(ctx, soql, opts...) {
				if !yield(rec, err) || err != nil {
					return
				}
			}
		}
	}
}

// soqlString quotes s as a SOQL string literal: backslash and single quote
// escaped (the only characters that could end or bend the literal).
func soqlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return "'" + r.Replace(s) + "'"
}
