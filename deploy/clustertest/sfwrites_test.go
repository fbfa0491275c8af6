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
// applied it: which org (by its origin's host), which field, which value,
// and whether it succeeded.
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

// wrap is the sandbox handler wrapper (testsandbox.ServeWith); each org has
// its own origin, so the Host header tells the orgs apart.
func (l *writeLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPatch || !strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/composite/sobjects") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct {
			Records []map[string]any `json:"records"`
		}
		_ = json.Unmarshal(body, &req) // a bad body is the emulator's to answer
		ids := make([]string, 0, len(req.Records))
		for _, rec := range req.Records {
			if id, _ := rec["id"].(string); id != "" {
				ids = append(ids, r.Host+"/"+id)
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
		var results []struct {
			Success bool `json:"success"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &results)
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, in := range req.Records {
			id, _ := in["id"].(string)
			ok := rec.status() == http.StatusOK && i < len(results) && results[i].Success
			for k, v := range in {
				if b, isBool := v.(bool); isBool && k != "attributes" && !strings.EqualFold(k, "id") {
					l.writes = append(l.writes, sfWrite{Host: r.Host, RecordID: id, Field: k, Value: b, OK: ok})
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
