package salesforce

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Bulk API 2.0 query job states.
const (
	JobUploadComplete = "UploadComplete"
	JobInProgress     = "InProgress"
	JobComplete       = "JobComplete"
	JobFailed         = "Failed"
	JobAborted        = "Aborted"
)

// BulkJob is a Bulk API 2.0 query job's info.
type BulkJob struct {
	ID                     string  `json:"id"`
	Operation              string  `json:"operation"`
	Object                 string  `json:"object"`
	State                  string  `json:"state"`
	ErrorMessage           string  `json:"errorMessage"`
	APIVersion             float64 `json:"apiVersion"`
	NumberRecordsProcessed int64   `json:"numberRecordsProcessed"`
	Retries                int     `json:"retries"`
	TotalProcessingTime    int64   `json:"totalProcessingTime"`
}

// BulkQueryOptions tunes BulkQuery.
type BulkQueryOptions struct {
	// All runs operation queryAll (deleted and archived rows too).
	All bool
	// MaxRecords is the rows per results page (0 = Salesforce's choice).
	// A page is one HTTP response read within Config.Timeout, so keep it to
	// what the link can stream in that time (100,000 rows of Id and a checkbox ≈ 3 MB).
	MaxRecords int
	// PollInitial, PollMax and MaxWait drive the exponential backoff while
	// the job runs (defaults 500ms, 30s, 1h).
	PollInitial, PollMax, MaxWait time.Duration
	// Locator resumes reading results at a page handed out by OnPage.
	Locator string
	// OnPage is called after each page's rows were passed to the row
	// callback, with the locator of the next page ("" after the last).
	OnPage func(BulkPage)
}

// BulkPage describes one results page that was read.
type BulkPage struct {
	Number      int    // 1-based
	Rows        int    // rows read from this page
	NextLocator string // "" after the last page
}

// BulkResult summarises a streamed job.
type BulkResult struct {
	JobID string
	Pages int
	Rows  int64
}

const opBulk = "bulk query"

// CreateQueryJob starts a query job: POST /jobs/query.
func (c *Client) CreateQueryJob(ctx context.Context, soql string, all bool) (*BulkJob, error) {
	op := "query"
	if all {
		op = "queryAll"
	}
	var job BulkJob
	cl := &call{op: opBulk, method: "POST", route: "/jobs/query", path: "/jobs/query",
		body: jsonBody(map[string]string{"operation": op, "query": soql, "columnDelimiter": "COMMA", "lineEnding": "LF"})}
	if err := c.doJSON(ctx, cl, &job); err != nil {
		return nil, err
	}
	if job.ID == "" {
		return nil, newError(opBulk, 200, CodeResultMismatch, "job created without id")
	}
	return &job, nil
}

// QueryJob reads a job's info: GET /jobs/query/{id}.
func (c *Client) QueryJob(ctx context.Context, id string) (*BulkJob, error) {
	var job BulkJob
	cl := &call{op: opBulk, method: "GET", route: "/jobs/query/{job}", path: "/jobs/query/" + url.PathEscape(id)}
	if err := c.doJSON(ctx, cl, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// AbortQueryJob stops a running job: PATCH /jobs/query/{id} {"state":"Aborted"}.
func (c *Client) AbortQueryJob(ctx context.Context, id string) (*BulkJob, error) {
	var job BulkJob
	cl := &call{op: "abort bulk query", method: "PATCH", route: "/jobs/query/{job}", path: "/jobs/query/" + url.PathEscape(id),
		body: jsonBody(map[string]string{"state": JobAborted})}
	if err := c.doJSON(ctx, cl, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// DeleteQueryJob deletes a finished job and its results: DELETE /jobs/query/{id}.
func (c *Client) DeleteQueryJob(ctx context.Context, id string) error {
	cl := &call{op: "delete bulk query", method: "DELETE", route: "/jobs/query/{job}", path: "/jobs/query/" + url.PathEscape(id)}
	return c.doJSON(ctx, cl, nil)
}

var errJobRunning = errors.New("job still running")

// WaitQueryJob polls a job with exponential backoff until JobComplete.
// Failed and Aborted end it with a *Error; so do non-retryable poll errors.
// Retryable poll errors (5xx, network) are polled through.
func (c *Client) WaitQueryJob(ctx context.Context, id string, opts BulkQueryOptions) (*BulkJob, error) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(orDefault(opts.PollInitial, 500*time.Millisecond)),
		backoff.WithMaxInterval(orDefault(opts.PollMax, 30*time.Second)),
		backoff.WithMaxElapsedTime(orDefault(opts.MaxWait, time.Hour)),
	)
	var job *BulkJob
	poll := func() error {
		j, err := c.QueryJob(ctx, id)
		if err != nil {
			if ctx.Err() != nil || ClassOf(err) != Retryable {
				return backoff.Permanent(err)
			}
			return err
		}
		job = j
		switch j.State {
		case JobComplete:
			return nil
		case JobFailed:
			return backoff.Permanent(jobFailed(j))
		case JobAborted:
			return backoff.Permanent(newError(opBulk, 0, CodeBulkJobAborted, "job "+j.ID+" was aborted"))
		}
		return errJobRunning
	}
	if err := backoff.Retry(poll, backoff.WithContext(b, ctx)); err != nil {
		if errors.Is(err, errJobRunning) {
			return job, newError(opBulk, 0, CodeBulkJobTimeout, fmt.Sprintf("job %s not complete after %s", id, orDefault(opts.MaxWait, time.Hour)))
		}
		var e *Error
		if !errors.As(err, &e) {
			return job, transportError(ctx, opBulk, err)
		}
		return job, err
	}
	return job, nil
}

// jobFailed classifies a Failed job by the Salesforce code its message
// starts with (e.g. "InvalidBatch : Failed to process query: INVALID_FIELD: …"),
// or as BULK_JOB_FAILED (retryable) when none is recognisable.
func jobFailed(j *BulkJob) *Error {
	msg := truncate(j.ErrorMessage)
	for _, code := range []string{"INVALID_FIELD", "MALFORMED_QUERY", "INVALID_TYPE", "INSUFFICIENT_ACCESS", "API_DISABLED_FOR_ORG"} {
		if strings.Contains(j.ErrorMessage, code+":") || strings.HasPrefix(j.ErrorMessage, code) {
			return newError(opBulk, 0, code, msg)
		}
	}
	if msg == "" {
		msg = "job " + j.ID + " failed"
	}
	return newError(opBulk, 0, CodeBulkJobFailed, msg)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// BulkQuery runs a query job and streams its rows to fn page by page: one
// HTTP response is read at a time, row by row, and never buffered. header and
// row are reused between calls; copy what must outlive the call. Returning an
// error from fn stops the stream (the job is left for Salesforce to expire).
func (c *Client) BulkQuery(ctx context.Context, soql string, opts BulkQueryOptions, fn func(header, row []string) error) (BulkResult, error) {
	job, err := c.CreateQueryJob(ctx, soql, opts.All)
	if err != nil {
		return BulkResult{}, err
	}
	if _, err := c.WaitQueryJob(ctx, job.ID, opts); err != nil {
		return BulkResult{JobID: job.ID}, err
	}
	return c.QueryJobResults(ctx, job.ID, opts, fn)
}

// QueryJobResults streams a complete job's results: GET
// /jobs/query/{id}/results, following Sforce-Locator until the literal "null".
func (c *Client) QueryJobResults(ctx context.Context, id string, opts BulkQueryOptions, fn func(header, row []string) error) (BulkResult, error) {
	res := BulkResult{JobID: id}
	locator := opts.Locator
	for {
		q := url.Values{}
		if locator != "" {
			q.Set("locator", locator)
		}
		if opts.MaxRecords > 0 {
			q.Set("maxRecords", strconv.Itoa(opts.MaxRecords))
		}
		next, rows, err := c.resultsPage(ctx, id, q.Encode(), fn)
		res.Rows += int64(rows)
		if err != nil {
			return res, err
		}
		res.Pages++
		if opts.OnPage != nil {
			opts.OnPage(BulkPage{Number: res.Pages, Rows: rows, NextLocator: next})
		}
		if next == "" {
			return res, nil
		}
		locator = next
	}
}

// resultsPage reads one page and returns the next locator ("" at the end).
func (c *Client) resultsPage(ctx context.Context, id, rawQuery string, fn func(header, row []string) error) (string, int, error) {
	cl := &call{op: opBulk + " results", method: "GET", route: "/jobs/query/{job}/results",
		path: "/jobs/query/" + url.PathEscape(id) + "/results", rawQuery: rawQuery, accept: "text/csv"}
	resp, err := c.send(ctx, cl)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	next := strings.TrimSpace(resp.Header.Get("Sforce-Locator"))
	if next == "null" {
		next = ""
	}
	want := -1
	if v := resp.Header.Get("Sforce-NumberOfRecords"); v != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			want = n
		}
	}

	r := csv.NewReader(resp.Body)
	r.ReuseRecord = true
	r.FieldsPerRecord = 0 // every row as wide as the header
	var header []string
	rows := 0
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return "", rows, transportError(ctx, cl.op, err)
			}
			return "", rows, &Error{Op: cl.op, Status: resp.StatusCode, Code: CodeResultMismatch, Message: "bad CSV: " + err.Error(), Class: Retryable, Err: err}
		}
		if header == nil {
			header = append([]string(nil), rec...) // rec is reused
			continue
		}
		rows++
		if err := fn(header, rec); err != nil {
			return "", rows, err
		}
	}
	// A body cut at a row boundary parses cleanly; the header count catches it.
	if want >= 0 && rows != want {
		return "", rows, newError(cl.op, resp.StatusCode, CodeResultMismatch,
			fmt.Sprintf("page declared %d rows (Sforce-NumberOfRecords) but carried %d", want, rows))
	}
	return next, rows, nil
}
