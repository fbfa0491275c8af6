package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Bulk API 2.0 job states.
const (
	stateOpen           = "Open"
	stateUploadComplete = "UploadComplete"
	stateInProgress     = "InProgress"
	stateJobComplete    = "JobComplete"
	stateFailed         = "Failed"
	stateAborted        = "Aborted"
)

// bulkJob is a query or ingest job.
type bulkJob struct {
	id, kind, operation, object string
	apiVersion                  string
	client                      string // Sforce-Call-Options client of the creating call
	state, errorMessage         string
	created, modstamp           time.Time
	stateSince                  time.Time
	polls                       int
	lineEnding, columnDelimiter string

	// query jobs: the result rows, computed once when the job is created
	cq   *compiledQuery
	refs []ref

	// ingest jobs
	upload                  []byte
	processing, processed   bool
	successRows, failedRows [][]string
	inputHeader             []string
	unprocessed             [][]string
	numProcessed, numFailed int
	contentURL              string
	totalProcessingMs       int64
}

func terminal(state string) bool {
	return state == stateJobComplete || state == stateFailed || state == stateAborted
}

// delimiters maps columnDelimiter names to bytes.
var delimiters = map[string]byte{"COMMA": ',', "TAB": '\t', "SEMICOLON": ';', "PIPE": '|', "CARET": '^', "BACKQUOTE": '`'}

// jobCommon decodes the shared create fields and fills defaults.
type jobRequest struct {
	Operation       string `json:"operation"`
	Query           string `json:"query"`
	Object          string `json:"object"`
	ContentType     string `json:"contentType"`
	ColumnDelimiter string `json:"columnDelimiter"`
	LineEnding      string `json:"lineEnding"`
}

func (req *jobRequest) validateFormat() error {
	if req.ColumnDelimiter == "" {
		req.ColumnDelimiter = "COMMA"
	}
	if req.LineEnding == "" {
		req.LineEnding = "LF"
	}
	if req.ContentType == "" {
		req.ContentType = "CSV"
	}
	if _, ok := delimiters[req.ColumnDelimiter]; !ok {
		return fmt.Errorf("invalid columnDelimiter %q", req.ColumnDelimiter)
	}
	if req.LineEnding != "LF" && req.LineEnding != "CRLF" {
		return fmt.Errorf("invalid lineEnding %q", req.LineEnding)
	}
	if req.ContentType != "CSV" {
		return fmt.Errorf("invalid contentType %q", req.ContentType)
	}
	return nil
}

func (o *Org) newJob(kind string, req jobRequest, version string) *bulkJob {
	now := o.now()
	j := &bulkJob{
		id: makeID(prefixJob, o.nextSeq()).String(), kind: kind, operation: req.Operation, object: req.Object,
		apiVersion: version, created: now, modstamp: now, stateSince: now,
		lineEnding: req.LineEnding, columnDelimiter: req.ColumnDelimiter,
	}
	return j
}

func (o *Org) addJob(j *bulkJob) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.jobs[j.id] = j
	o.jobOrder = append(o.jobOrder, j.id)
}

// job finds a job of the given kind; it answers 404 itself.
func (o *Org) job(w http.ResponseWriter, id, kind string) *bulkJob {
	o.mu.Lock()
	j := o.jobs[id]
	o.mu.Unlock()
	if j == nil || j.kind != kind {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "Job not found: "+id, nil)
		return nil
	}
	return j
}

// setState moves j; the caller holds o.mu.
func (o *Org) setState(j *bulkJob, state string) {
	j.state = state
	j.polls = 0
	j.stateSince = o.now()
	j.modstamp = j.stateSince
}

// advance moves a job along on a poll ("poll" mode) or with time ("time"
// mode). It reports whether an ingest job now needs its rows processed
// (done outside o.mu). The caller holds o.mu.
func (o *Org) advance(j *bulkJob) (needProcess bool) {
	b := o.cfg.Behavior
	steps := 0
	switch b.BulkAdvance {
	case "time":
		steps = int(o.now().Sub(j.stateSince) / b.BulkStateDuration)
	default:
		j.polls++
		if j.polls >= b.BulkPollsPerState {
			steps = 1
		}
	}
	for ; steps > 0 && !terminal(j.state); steps-- {
		switch j.state {
		case stateUploadComplete:
			o.setState(j, stateInProgress)
		case stateInProgress:
			if j.kind == "ingest" && !j.processed {
				if !j.processing {
					j.processing = true
					return true
				}
				return false
			}
			o.setState(j, stateJobComplete)
		default: // Open ingest jobs wait for the client
			return false
		}
	}
	return false
}

// SetBulkJobState forces a job into a state ("Failed" with errorMessage, "Aborted", "JobComplete"...).
func (o *Org) SetBulkJobState(id, state, errorMessage string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	j := o.jobs[id]
	if j == nil {
		return fmt.Errorf("set state of %s: %w", id, ErrJobNotFound)
	}
	switch state {
	case stateOpen, stateUploadComplete, stateInProgress, stateJobComplete, stateFailed, stateAborted:
	default:
		return fmt.Errorf("set state %q: %w", state, ErrInvalidState)
	}
	o.setState(j, state)
	if state == stateFailed {
		j.errorMessage = errorMessage
	}
	return nil
}

// BulkJobIDs lists the jobs, oldest first.
func (o *Org) BulkJobIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.jobOrder...)
}

// BulkJobState returns a job's state without counting as a poll.
func (o *Org) BulkJobState(id string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if j := o.jobs[id]; j != nil {
		return j.state, true
	}
	return "", false
}

// info renders the job info; full adds the GET-only fields. The caller holds o.mu.
func (j *bulkJob) info(full bool, createdBy string) orderedObject {
	obj := orderedObject{
		{"id", j.id}, {"operation", j.operation}, {"object", j.object}, {"createdById", createdBy},
		{"createdDate", sfTime(j.created.UnixMilli())}, {"systemModstamp", sfTime(j.modstamp.UnixMilli())},
		{"state", j.state},
	}
	if j.kind == "ingest" {
		obj = append(obj, kv{"externalIdFieldName", nil})
	}
	obj = append(obj, kv{"concurrencyMode", "Parallel"})
	if j.kind == "ingest" {
		obj = append(obj, kv{"contentType", "CSV"}, kv{"apiVersion", json.Number(j.apiVersion)})
		if j.state == stateOpen {
			obj = append(obj, kv{"contentUrl", j.contentURL})
		}
	} else {
		obj = append(obj, kv{"contentType", "CSV"}, kv{"apiVersion", json.Number(j.apiVersion)})
	}
	obj = append(obj, kv{"lineEnding", j.lineEnding}, kv{"columnDelimiter", j.columnDelimiter})
	if full {
		if j.kind == "ingest" {
			obj = append(obj, kv{"jobType", "V2Ingest"}, kv{"numberRecordsProcessed", j.numProcessed},
				kv{"numberRecordsFailed", j.numFailed}, kv{"retries", 0},
				kv{"totalProcessingTime", j.totalProcessingMs})
		} else {
			processed := 0
			if j.state == stateJobComplete {
				processed = len(j.refs)
			}
			obj = append(obj, kv{"jobType", "V2Query"}, kv{"numberRecordsProcessed", processed},
				kv{"retries", 0}, kv{"totalProcessingTime", j.totalProcessingMs})
		}
		if j.state == stateFailed {
			obj = append(obj, kv{"errorMessage", j.errorMessage})
		}
	}
	return obj
}

func (o *Org) writeJobInfo(w http.ResponseWriter, status int, j *bulkJob, full bool) {
	o.mu.Lock()
	info := j.info(full, o.userID.String())
	o.mu.Unlock()
	writeJSON(w, status, info)
}

// pollJob serves GET /jobs/{kind}/{id}: advances the state machine and
// applies a BulkState fault.
func pollJob(rc *reqCtx, kind string) {
	o := rc.o
	j := o.job(rc.w, rc.segs[2], kind)
	if j == nil {
		return
	}
	o.mu.Lock()
	needProcess := false
	if rc.bulkState != "" && !terminal(j.state) {
		o.setState(j, rc.bulkState)
		if rc.bulkState == stateFailed {
			j.errorMessage = rc.bulkMessage
			if j.errorMessage == "" {
				j.errorMessage = "InternalServerError : injected failure"
			}
		}
	} else {
		needProcess = o.advance(j)
	}
	o.mu.Unlock()
	if needProcess {
		o.processIngest(j)
	}
	o.writeJobInfo(rc.w, http.StatusOK, j, true)
}

// changeJobState serves PATCH /jobs/{kind}/{id} {"state": ...}.
func changeJobState(rc *reqCtx, kind string) {
	o := rc.o
	j := o.job(rc.w, rc.segs[2], kind)
	if j == nil {
		return
	}
	data, err := readBody(rc.r)
	var req struct {
		State string `json:"state"`
	}
	if err == nil {
		err = json.Unmarshal(data, &req)
	}
	if err != nil {
		writeError(rc.w, http.StatusBadRequest, "JSON_PARSER_ERROR", "Unable to parse the request body", nil)
		return
	}
	o.mu.Lock()
	cur := j.state
	switch {
	case req.State == stateAborted && !terminal(cur):
		o.setState(j, stateAborted)
		if j.kind == "ingest" && !j.processed {
			j.unprocessed = parseUnprocessed(j)
		}
	case req.State == stateUploadComplete && kind == "ingest" && cur == stateOpen:
		o.setState(j, stateUploadComplete)
	default:
		o.mu.Unlock()
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOBSTATE", fmt.Sprintf("Job %s: cannot change state from %s to %s", j.id, cur, req.State), nil)
		return
	}
	o.mu.Unlock()
	o.writeJobInfo(rc.w, http.StatusOK, j, false)
}

func handleBulkAbort(rc *reqCtx) { changeJobState(rc, "query") }

func handleBulkDelete(rc *reqCtx) {
	kind := rc.segs[1]
	o := rc.o
	j := o.job(rc.w, rc.segs[2], kind)
	if j == nil {
		return
	}
	o.mu.Lock()
	if j.state == stateInProgress || (kind == "ingest" && j.state == stateUploadComplete) {
		o.mu.Unlock()
		writeError(rc.w, http.StatusBadRequest, "INVALIDJOBSTATE", "Job "+j.id+" cannot be deleted in state "+j.state, nil)
		return
	}
	delete(o.jobs, j.id)
	for i, id := range o.jobOrder {
		if id == j.id {
			o.jobOrder = append(o.jobOrder[:i], o.jobOrder[i+1:]...)
			break
		}
	}
	o.mu.Unlock()
	rc.w.WriteHeader(http.StatusNoContent)
}

var errBadLocator = errors.New("invalid locator")
