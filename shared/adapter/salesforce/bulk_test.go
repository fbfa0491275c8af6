package salesforce

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

var fastPoll = BulkQueryOptions{PollInitial: 5 * time.Millisecond, PollMax: 50 * time.Millisecond, MaxWait: 30 * time.Second}

func TestBulkQuery50kStreamedPageByPage(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 50000, OptedOutShare: 0.1})
	wantOpted := 0
	for _, r := range e.org.Records() {
		if r.Type == "Contact" && r.HasOptedOutOfEmail {
			wantOpted++
		}
	}
	c := e.client(t)
	ctx := ctxT(t)

	job, err := c.CreateQueryJob(ctx, "SELECT Id, HasOptedOutOfEmail FROM Contact", false)
	require.NoError(t, err)
	assert.Len(t, job.ID, 18)
	done, err := c.WaitQueryJob(ctx, job.ID, fastPoll)
	require.NoError(t, err)
	assert.Equal(t, JobComplete, done.State)

	base := c.APICalls()
	opts := fastPoll
	opts.MaxRecords = 10000
	pagesDone, rowsInPage, opted := 0, 0, 0
	var pageRows []int
	opts.OnPage = func(p BulkPage) {
		pagesDone++
		assert.Equal(t, pagesDone, p.Number)
		pageRows = append(pageRows, p.Rows)
		rowsInPage = 0
		if p.Number < 5 {
			assert.NotEmpty(t, p.NextLocator)
		} else {
			assert.Empty(t, p.NextLocator, "the literal null ends the stream")
		}
	}
	res, err := c.QueryJobResults(ctx, job.ID, opts, func(header, row []string) error {
		if rowsInPage == 0 {
			// The first row of page k arrives after exactly k results
			// requests: rows are handed over while the page streams in,
			// before the next page is asked for.
			assert.Equal(t, int64(pagesDone+1), c.APICalls()-base)
			assert.Equal(t, []string{"Id", "HasOptedOutOfEmail"}, header)
		}
		rowsInPage++
		require.Len(t, row, 2)
		require.Len(t, row[0], 18)
		switch row[1] {
		case "true":
			opted++
		case "false":
		default:
			t.Fatalf("boolean rendered as %q", row[1])
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(50000), res.Rows)
	assert.Equal(t, 5, res.Pages)
	assert.Equal(t, []int{10000, 10000, 10000, 10000, 10000}, pageRows)
	assert.Equal(t, wantOpted, opted)
	assert.Len(t, callsOn(e.org, sandbox.RouteBulkQueryResults), 5)
}

func TestBulkQueryConvenienceAndResume(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 250, Leads: 40})
	c := e.client(t)
	ctx := ctxT(t)

	opts := fastPoll
	opts.MaxRecords = 100
	var locators []string
	opts.OnPage = func(p BulkPage) { locators = append(locators, p.NextLocator) }
	ids := map[string]bool{}
	res, err := c.BulkQuery(ctx, "SELECT Id FROM Contact", opts, func(_, row []string) error {
		ids[row[0]] = true
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(250), res.Rows)
	assert.Equal(t, 3, res.Pages)
	assert.Len(t, ids, 250)

	// Resume at page 2 from its locator (locators are re-readable).
	opts.OnPage = nil
	opts.Locator = locators[0]
	res2, err := c.QueryJobResults(ctx, res.JobID, opts, func(_, row []string) error {
		assert.True(t, ids[row[0]])
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(150), res2.Rows)

	// A callback error stops the stream and is returned as is.
	stop := errors.New("stop")
	_, err = c.QueryJobResults(ctx, res.JobID, BulkQueryOptions{}, func(_, _ []string) error { return stop })
	assert.ErrorIs(t, err, stop)
}

func TestBulkJobFailedAndAborted(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 10})
	c := e.client(t)
	ctx := ctxT(t)

	cases := []struct {
		state, message, code string
		class                Class
	}{
		{JobFailed, "InvalidBatch : Failed to process query: INVALID_FIELD: No such column 'X__c' on entity 'Contact'", "INVALID_FIELD", PermanentTenant},
		{JobFailed, "Internal error, please retry", CodeBulkJobFailed, Retryable},
		{JobAborted, "", CodeBulkJobAborted, Retryable},
	}
	for _, tc := range cases {
		e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteBulkQueryGet, BulkState: tc.state, Message: tc.message, Times: 1})
		_, err := c.BulkQuery(ctx, "SELECT Id FROM Contact", fastPoll, func(_, _ []string) error {
			t.Fatal("no rows from a job that did not complete")
			return nil
		})
		se := errOf(t, err)
		assert.Equal(t, tc.code, se.Code, "%v", err)
		assert.Equal(t, tc.class, se.Class, "%v", err)
	}

	// Aborted through the API.
	job, err := c.CreateQueryJob(ctx, "SELECT Id FROM Contact", false)
	require.NoError(t, err)
	ab, err := c.AbortQueryJob(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, JobAborted, ab.State)
	_, err = c.WaitQueryJob(ctx, job.ID, fastPoll)
	assert.Equal(t, CodeBulkJobAborted, errOf(t, err).Code)
	require.NoError(t, c.DeleteQueryJob(ctx, job.ID))

	// Bad SOQL may be refused at creation.
	_, err = c.CreateQueryJob(ctx, "SELECT Id, Nope__c FROM Contact", false)
	if err != nil {
		assert.Equal(t, PermanentTenant, ClassOf(err), "%v", err)
	} else {
		t.Log("emulator accepts a job with an unknown field at creation")
	}
}

func TestBulkPollingSurvivesTransientErrorsAndTokenExpiry(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 300})
	c := e.client(t)
	ctx := ctxT(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteBulkQueryGet, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Times: 2})
	opts := fastPoll
	opts.MaxRecords = 100
	n := 0
	res, err := c.BulkQuery(ctx, "SELECT Id FROM Contact", opts, func(_, _ []string) error {
		n++
		if n == 50 {
			e.org.ExpireTokens() // between results pages
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(300), res.Rows)
	assert.Equal(t, int64(2), c.TokenFetches())
}

func TestBulkPollTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteBulkQueryGet, Status: 503, ErrorCode: "SERVER_UNAVAILABLE"})
	job, err := c.CreateQueryJob(ctx, "SELECT Id FROM Contact", false)
	require.NoError(t, err)
	_, err = c.WaitQueryJob(ctx, job.ID, BulkQueryOptions{PollInitial: time.Millisecond, PollMax: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond})
	assert.Equal(t, Retryable, ClassOf(err), "%v", err)
}
