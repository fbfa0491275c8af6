package sandbox

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// RouteBulkIngestRow is the Fault.Route for per-row failures of ingest jobs
// (set RecordID): the row fails with the fault's ErrorCode/Message.
const RouteBulkIngestRow = "bulk.ingest.row"

func handleIngestCreate(rc *reqCtx) {
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
	t, ok := typeByName(req.Object)
	if !ok {
		writeError(rc.w, http.StatusBadRequest, "INVALIDENTITY", "Entity '"+req.Object+"' is not supported by the Bulk API.", nil)
		return
	}
	if req.Operation != "update" {
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", "sfsandbox supports only operation update, not "+req.Operation, nil)
		return
	}
	if err := req.validateFormat(); err != nil {
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", err.Error(), nil)
		return
	}
	req.Object = t.String()
	j := o.newJob("ingest", req, rc.version)
	j.client = rc.call.Client
	j.state = stateOpen
	j.contentURL = "services/data/v" + rc.version + "/jobs/ingest/" + j.id + "/batches"
	o.addJob(j)
	o.writeJobInfo(rc.w, http.StatusOK, j, false)
}

func handleIngestUpload(rc *reqCtx) {
	o := rc.o
	j := o.job(rc.w, rc.segs[2], "ingest")
	if j == nil {
		return
	}
	data, err := readBody(rc.r)
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOB", err.Error(), nil)
		return
	}
	o.mu.Lock()
	if j.state != stateOpen {
		o.mu.Unlock()
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOBSTATE", "Job "+j.id+" is not Open", nil)
		return
	}
	if len(j.upload) > 0 {
		o.mu.Unlock()
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOBSTATE", "Found multiple contents for job: "+j.id+", please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job.", nil)
		return
	}
	j.upload = data
	o.mu.Unlock()
	rc.w.WriteHeader(http.StatusCreated)
}

func handleIngestPatch(rc *reqCtx) { changeJobState(rc, "ingest") }

func handleIngestGet(rc *reqCtx) { pollJob(rc, "ingest") }

// readUpload parses the uploaded CSV with the job's delimiter.
func readUpload(j *bulkJob) ([][]string, error) {
	r := csv.NewReader(bytes.NewReader(j.upload))
	r.Comma = rune(delimiters[j.columnDelimiter])
	r.FieldsPerRecord = -1
	return r.ReadAll()
}

func parseUnprocessed(j *bulkJob) [][]string {
	rows, err := readUpload(j)
	if err != nil || len(rows) == 0 {
		return nil
	}
	j.inputHeader = rows[0]
	return rows[1:]
}

// processIngest applies an ingest job's rows; it runs outside o.mu.
func (o *Org) processIngest(j *bulkJob) {
	start := time.Now()
	o.mu.Lock()
	b := o.cfg.Behavior
	o.mu.Unlock()
	t, _ := typeByName(j.object)
	sc := o.schemaFor(t)
	rows, err := readUpload(j)
	finish := func(state, msg string) {
		o.mu.Lock()
		j.processed, j.processing = true, false
		j.totalProcessingMs = time.Since(start).Milliseconds()
		o.setState(j, state)
		j.errorMessage = msg
		o.mu.Unlock()
	}
	if err != nil {
		finish(stateFailed, "InvalidBatch : Failed to parse CSV: "+err.Error())
		return
	}
	if len(rows) == 0 {
		finish(stateFailed, "InvalidBatch : Empty CSV content")
		return
	}
	header := rows[0]
	idCol := -1
	cols := make([]fieldDef, len(header))
	for i, h := range header {
		f, ok := sc.lookup(strings.TrimSpace(h))
		if !ok {
			finish(stateFailed, "InvalidBatch : Field name not found : "+h)
			return
		}
		cols[i] = f
		if f.ID == fID {
			idCol = i
		}
	}
	if idCol < 0 {
		finish(stateFailed, "InvalidBatch : Field name not found : Id")
		return
	}
	type rowWork struct {
		row []string
		id  sfid
		as  []assignment
		err *recErr
	}
	work := make([]rowWork, 0, len(rows)-1)
	for _, row := range rows[1:] {
		w := rowWork{row: row}
		w.err = func() *recErr {
			if len(row) != len(header) {
				return &recErr{code: "INVALID_FIELD", msg: "Row has a different number of columns than the header"}
			}
			id, ok := parseID(row[idCol])
			if !ok || id.Prefix() != typePrefixes[t] {
				return &recErr{code: "MALFORMED_ID", msg: t.String() + " ID: id value of incorrect type: " + row[idCol], fields: []string{"Id"}}
			}
			w.id = id
			var readOnly []string
			for i, f := range cols {
				v := row[i]
				if i == idCol || v == "" {
					continue // empty cell: leave unchanged
				}
				if !f.Writable {
					readOnly = append(readOnly, f.Name)
					continue
				}
				a := assignment{f: f}
				switch {
				case v == "#N/A":
					a.null = true
				case f.Kind == kindBool:
					switch strings.ToLower(v) {
					case "true", "1":
						a.b = true
					case "false", "0":
					default:
						return &recErr{code: "INVALID_FIELD", msg: f.Name + ": value not of required type: " + v, fields: []string{f.Name}}
					}
				default:
					a.s = v
				}
				w.as = append(w.as, a)
			}
			if len(readOnly) > 0 {
				return &recErr{code: "INVALID_FIELD_FOR_INSERT_UPDATE", msg: "Unable to create/update fields: " + strings.Join(readOnly, ", ") + fieldSecurityTail, fields: readOnly}
			}
			if f := o.matchRecordFault(RouteBulkIngestRow, id.String()); f != nil && (f.Status != 0 || f.ErrorCode != "") {
				_, code, msg := o.faultDefaults(f, id.String())
				return &recErr{code: code, msg: msg}
			}
			return nil
		}()
		work = append(work, w)
	}
	now := msOf(o.now())
	var success, failed [][]string
	var changes []Change
	custom := o.cdcCustom()
	var cdc []cdcChange
	s := o.st
	s.mu.Lock()
	for i := range work {
		w := &work[i]
		if w.err == nil {
			r, found := s.lookup(w.id)
			if !found {
				r = nil
			}
			w.err = checkWritable(r, b.CollectionsMissingRecordCode, b.ConvertedLeadStatus)
			if w.err == nil {
				before := *r
				changed := apply(r, w.as, now)
				cdc = append(cdc, diffChange(&before, r, custom, true))
				changes = append(changes, Change{RecordID: w.id.String(), Type: t.String(), ChangeType: "UPDATE", ChangedFields: changed,
					Origin: "com/salesforce/api/bulk/" + j.apiVersion})
			}
		}
		if w.err != nil {
			failed = append(failed, append([]string{"", sfError(w.err)}, w.row...))
		} else {
			success = append(success, append([]string{w.id.String(), "false"}, w.row...))
		}
	}
	s.mu.Unlock()
	for _, c := range changes {
		o.recordChange(c.RecordID, c.Type, c.ChangeType, c.ChangedFields, c.Origin)
	}
	// [inference] Bulk API 2.0 runs an upload in transactions of 200 rows
	// (the trigger batch size). Whether its changeOrigin carries client= is
	// unconfirmed (§Unconfirmed): Behavior.CDCBulkClient decides.
	o.mu.Lock()
	bulkClient := ""
	if o.cfg.Behavior.CDCBulkClient {
		bulkClient = j.client
	}
	o.mu.Unlock()
	origin := o.cdcOrigin("bulkapi", j.apiVersion, bulkClient)
	for len(cdc) > 0 {
		n := min(len(cdc), 200)
		o.commitCDC(origin, cdc[:n])
		cdc = cdc[n:]
	}
	o.mu.Lock()
	j.inputHeader = header
	j.successRows, j.failedRows = success, failed
	j.numProcessed, j.numFailed = len(work), len(failed)
	o.mu.Unlock()
	finish(stateJobComplete, "")
}

// sfError renders a failed row's sf__Error: CODE:message:fields --.
func sfError(e *recErr) string {
	return e.code + ":" + e.msg + ":" + strings.Join(e.fields, ",") + " --"
}

func handleIngestResults(rc *reqCtx) {
	o := rc.o
	j := o.job(rc.w, rc.segs[2], "ingest")
	if j == nil {
		return
	}
	o.mu.Lock()
	state := j.state
	header, emptyBare := j.inputHeader, o.cfg.Behavior.BulkEmptyUnquoted
	var cols []string
	var rows [][]string
	switch rc.segs[3] {
	case "successfulResults":
		cols, rows = append([]string{"sf__Id", "sf__Created"}, header...), j.successRows
	case "failedResults":
		cols, rows = append([]string{"sf__Id", "sf__Error"}, header...), j.failedRows
	default:
		cols, rows = header, j.unprocessed
	}
	o.mu.Unlock()
	if rc.segs[3] != "unprocessedrecords" && state != stateJobComplete {
		o.notCompleteAnswer(rc.w, j, state)
		return
	}
	var buf bytes.Buffer
	cw := newCSVWriter(&buf, j.columnDelimiter, j.lineEnding, emptyBare)
	if len(cols) > 0 {
		cw.row(cols)
	}
	for _, r := range rows {
		cw.row(r)
	}
	rc.w.Header().Set("Content-Type", "text/csv")
	rc.w.WriteHeader(http.StatusOK)
	_, _ = rc.w.Write(buf.Bytes())
}
