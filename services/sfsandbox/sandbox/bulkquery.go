package sandbox

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// csvWriter writes Bulk API CSV: every value double-quoted (quotes doubled),
// the job's delimiter and line ending.
type csvWriter struct {
	w         *bytes.Buffer
	delim     byte
	eol       string
	emptyBare bool
}

func newCSVWriter(w *bytes.Buffer, delimiter, lineEnding string, emptyBare bool) *csvWriter {
	eol := "\n"
	if lineEnding == "CRLF" {
		eol = "\r\n"
	}
	return &csvWriter{w: w, delim: delimiters[delimiter], eol: eol, emptyBare: emptyBare}
}

func (c *csvWriter) row(vals []string) {
	for i, v := range vals {
		if i > 0 {
			c.w.WriteByte(c.delim)
		}
		if v == "" && c.emptyBare {
			continue
		}
		c.w.WriteByte('"')
		c.w.WriteString(strings.ReplaceAll(v, `"`, `""`))
		c.w.WriteByte('"')
	}
	c.w.WriteString(c.eol)
}

// csvValue renders field f of r for a result CSV.
func csvValue(r *rec, f fieldID, dtLayout string) string {
	switch v := jsonValue(r, f).(type) {
	case nil:
		return ""
	case bool:
		return strconv.FormatBool(v)
	case string:
		if f == fLastModifiedDate || f == fSystemModstamp {
			ms := r.modstamp
			if f == fLastModifiedDate {
				ms = r.lastMod
			}
			return timeOf(ms).Format(dtLayout)
		}
		return v
	}
	return ""
}

func handleBulkQueryCreate(rc *reqCtx) {
	o := rc.o
	data, err := readBody(rc.r)
	var req jobRequest
	if err == nil {
		err = json.Unmarshal(data, &req)
	}
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "Unable to parse the request body", nil)
		return
	}
	if req.Operation != "query" && req.Operation != "queryAll" {
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", "Invalid operation: "+req.Operation, nil)
		return
	}
	if err := req.validateFormat(); err != nil {
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", err.Error(), nil)
		return
	}
	cq, ok := o.compile(rc.w, req.Query)
	if !ok {
		return
	}
	req.Object = cq.typ.String()
	j := o.newJob("query", req, rc.version)
	j.cq = cq
	j.state = stateUploadComplete
	// The rows are fixed when the job is created: a job reads a snapshot.
	j.refs = o.st.execute(cq, req.Operation == "queryAll")
	o.addJob(j)
	o.mu.Lock()
	o.bulkQueryJobs++
	o.mu.Unlock()
	o.writeJobInfo(rc.w, http.StatusOK, j, false)
}

func handleBulkQueryGet(rc *reqCtx) { pollJob(rc, "query") }

func handleBulkQueryList(rc *reqCtx) {
	o := rc.o
	o.mu.Lock()
	records := []orderedObject{}
	for _, id := range o.jobOrder {
		if j := o.jobs[id]; j.kind == "query" {
			records = append(records, j.info(false, o.userID.String()))
		}
	}
	o.mu.Unlock()
	writeJSON(rc.w, http.StatusOK, orderedObject{{"done", true}, {"records", records}, {"nextRecordsUrl", nil}})
}

// encodeLocator makes the opaque page locator: base64 of the row offset
// without padding (Salesforce's look like MTAwMDA).
func encodeLocator(off int) string {
	return base64.RawStdEncoding.EncodeToString([]byte(strconv.Itoa(off)))
}

func decodeLocator(s string) (int, error) {
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return 0, errBadLocator
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 0 {
		return 0, errBadLocator
	}
	return n, nil
}

// notCompleteAnswer answers a results request before JobComplete.
func (o *Org) notCompleteAnswer(w http.ResponseWriter, j *bulkJob, state string) {
	o.mu.Lock()
	mode := o.cfg.Behavior.BulkResultsBeforeComplete
	o.mu.Unlock()
	if state == stateFailed || state == stateAborted {
		writeError(w, http.StatusBadRequest, "INVALIDJOBSTATE", "Job "+j.id+" is in state "+state, nil)
		return
	}
	if mode == "204" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, http.StatusPreconditionFailed, "JOB_NOT_COMPLETE", "Job "+j.id+" is not complete (state "+state+")", nil)
}

// handleBulkQueryResults streams one page of result CSV. Rows are rendered
// in small batches under the read lock, so a 1,000,000-row page never
// exists in memory as a whole.
func handleBulkQueryResults(rc *reqCtx) {
	o := rc.o
	j := o.job(rc.w, rc.segs[2], "query")
	if j == nil {
		return
	}
	if rc.version != j.apiVersion {
		writeError(rc.w, http.StatusConflict, "INVALIDJOB",
			"Job "+j.id+" was created with API version "+j.apiVersion+"; retrieve its results with that version, not "+rc.version, nil)
		return
	}
	o.mu.Lock()
	state := j.state
	b := o.cfg.Behavior
	o.mu.Unlock()
	if state != stateJobComplete {
		o.notCompleteAnswer(rc.w, j, state)
		return
	}
	q := rc.r.URL.Query()
	off := 0
	if loc := q.Get("locator"); loc != "" {
		n, err := decodeLocator(loc)
		if err != nil || n > len(j.refs) {
			writeError(rc.w, http.StatusBadRequest, "INVALID_QUERY_LOCATOR", "invalid locator: "+loc, nil)
			return
		}
		off = n
	}
	maxRecords := b.BulkDefaultMaxRecords
	if mr := q.Get("maxRecords"); mr != "" {
		n, err := strconv.Atoi(mr)
		if err != nil || n <= 0 {
			writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", "maxRecords must be a positive integer", nil)
			return
		}
		maxRecords = n
	}
	end := min(off+maxRecords, len(j.refs))
	next := "null"
	if end < len(j.refs) {
		next = encodeLocator(end)
	}
	h := rc.w.Header()
	h.Set("Content-Type", "text/csv")
	h.Set("Sforce-Locator", next)
	h.Set("Sforce-NumberOfRecords", strconv.Itoa(end-off))
	rc.w.WriteHeader(http.StatusOK)

	// Each batch is rendered under the read lock into buf and written after
	// unlocking, so a slow client never holds writers up.
	var buf bytes.Buffer
	cw := newCSVWriter(&buf, j.columnDelimiter, j.lineEnding, b.BulkEmptyUnquoted)
	header := make([]string, len(j.cq.fields))
	for i, f := range j.cq.fields {
		header[i] = f.Name
	}
	cw.row(header)
	vals := make([]string, len(header))
	const batch = 1000
	s := o.st
	for start := off; start < end; start += batch {
		stop := min(start+batch, end)
		s.mu.RLock()
		for _, rf := range j.refs[start:stop] {
			r := &s.recs[rf.typ()][rf.idx()]
			for i, f := range j.cq.fields {
				vals[i] = csvValue(r, f.ID, b.BulkDateTimeFormat)
			}
			cw.row(vals)
		}
		s.mu.RUnlock()
		if _, err := rc.w.Write(buf.Bytes()); err != nil {
			return // client went away
		}
		buf.Reset()
	}
	_, _ = rc.w.Write(buf.Bytes()) // header only, when the page is empty
}
