package clustertest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// sfWrite is one record of an sObject Collections update as Salesforce
// applied it (alone, or as a subrequest of a /composite, which is how the
// sales field is written): which org (by its origin's host), which field,
// which value, and whether it succeeded.
type sfWrite struct {
	Host, RecordID, Field string
	Value, OK             bool
}

// writeLog records every record written through sObject Collections, in
// the order the emulator applied them per record. It holds a lock per
// record for the length of a call, as Salesforce's row locks do, so two
// calls writing one record apply (and are logged) one after the other; calls
// on different records still run in parallel.
type writeLog struct {
	mu     sync.Mutex
	writes []sfWrite
	rows   sync.Map // org/record id → *sync.Mutex
}

// collectionWrite is one collection update in a call: its records, and
// where its answer is (the whole answer, or a composite's subresponse).
type collectionWrite struct {
	ref     string // the composite's referenceId; "" for a plain collection call
	records []map[string]any
}

// collectionWritesOf reads the collection updates a call makes, if any.
func collectionWritesOf(r *http.Request, body []byte) []collectionWrite {
	path := strings.TrimSuffix(r.URL.Path, "/")
	var coll struct {
		Records []map[string]any `json:"records"`
	}
	switch {
	case r.Method == http.MethodPatch && strings.HasSuffix(path, "/composite/sobjects"):
		_ = json.Unmarshal(body, &coll) // a bad body is the emulator's to answer
		return []collectionWrite{{records: coll.Records}}
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/composite"):
		var comp struct {
			CompositeRequest []struct {
				Method      string          `json:"method"`
				URL         string          `json:"url"`
				ReferenceID string          `json:"referenceId"`
				Body        json.RawMessage `json:"body"`
			} `json:"compositeRequest"`
		}
		_ = json.Unmarshal(body, &comp)
		var out []collectionWrite
		for _, sub := range comp.CompositeRequest {
			if sub.Method == http.MethodPatch && strings.HasSuffix(strings.TrimSuffix(sub.URL, "/"), "/composite/sobjects") {
				coll.Records = nil
				_ = json.Unmarshal(sub.Body, &coll)
				out = append(out, collectionWrite{ref: sub.ReferenceID, records: coll.Records})
			}
		}
		return out
	}
	return nil
}

// wrap is the sandbox handler wrapper (testsandbox.ServeWith); each org has
// its own origin, so the Host header tells the orgs apart.
func (l *writeLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPatch && r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		calls := collectionWritesOf(r, body)
		if len(calls) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		var ids []string
		for _, c := range calls {
			for _, rec := range c.records {
				if id, _ := rec["id"].(string); id != "" {
					ids = append(ids, r.Host+"/"+id)
				}
			}
		}
		// Sorted, so two calls over overlapping records cannot deadlock.
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, id := range ids {
			m, _ := l.rows.LoadOrStore(id, &sync.Mutex{})
			m.(*sync.Mutex).Lock()
		}
		defer func() {
			for _, id := range ids {
				m, _ := l.rows.Load(id)
				m.(*sync.Mutex).Unlock()
			}
		}()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		type result struct {
			Success bool `json:"success"`
		}
		answers := map[string][]result{} // by referenceId
		if rec.status() == http.StatusOK {
			if calls[0].ref == "" {
				var results []result
				_ = json.Unmarshal(rec.body.Bytes(), &results)
				answers[""] = results
			} else {
				var comp struct {
					CompositeResponse []struct {
						Body           json.RawMessage `json:"body"`
						HTTPStatusCode int             `json:"httpStatusCode"`
						ReferenceID    string          `json:"referenceId"`
					} `json:"compositeResponse"`
				}
				_ = json.Unmarshal(rec.body.Bytes(), &comp)
				for _, sub := range comp.CompositeResponse {
					if sub.HTTPStatusCode == http.StatusOK {
						var results []result
						_ = json.Unmarshal(sub.Body, &results)
						answers[sub.ReferenceID] = results
					}
				}
			}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range calls {
			results := answers[c.ref]
			for i, in := range c.records {
				id, _ := in["id"].(string)
				ok := i < len(results) && results[i].Success
				for k, v := range in {
					if b, isBool := v.(bool); isBool && k != "attributes" && !strings.EqualFold(k, "id") {
						l.writes = append(l.writes, sfWrite{Host: r.Host, RecordID: id, Field: k, Value: b, OK: ok})
					}
				}
			}
		}
	})
}

// all returns the log so far.
func (l *writeLog) all() []sfWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

// recorder keeps a copy of the response body on its way to the client.
type recorder struct {
	http.ResponseWriter
	code int
	body bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
