package salesforce

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

func TestQueryPaginationAndBatchSize(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 4500, Leads: 10, OptedOutShare: 0.5})
	want := 0
	for _, r := range e.org.Records() {
		if r.Type == "Contact" && r.HasOptedOutOfEmail {
			want++
		}
	}
	c := e.client(t)

	n, seen := 0, map[string]bool{}
	for rec, err := range c.Query(ctxT(t), "SELECT Id, HasOptedOutOfEmail FROM Contact WHERE HasOptedOutOfEmail = true", WithBatchSize(1000)) {
		require.NoError(t, err)
		require.Equal(t, "Contact", rec.Type)
		require.Len(t, rec.ID, 18)
		require.True(t, rec.Bool("HasOptedOutOfEmail"))
		require.False(t, seen[rec.ID], "no record twice")
		seen[rec.ID] = true
		n++
	}
	assert.Equal(t, want, n)
	pages := (want + 999) / 1000
	assert.Len(t, callsOn(e.org, sandbox.RouteQuery), 1)
	assert.Len(t, callsOn(e.org, sandbox.RouteQueryMore), pages-1, "batchSize=1000 honoured, nextRecordsUrl followed")
}

func TestQueryStopsEarly(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 3000})
	c := e.client(t)
	n := 0
	for _, err := range c.Query(ctxT(t), "SELECT Id FROM Contact") {
		require.NoError(t, err)
		n++
		if n == 10 {
			break
		}
	}
	assert.Equal(t, 10, n)
	assert.Equal(t, int64(1), c.APICalls(), "no further page is fetched after the consumer stops")
}

func TestQueryEmpty(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	n := 0
	for _, err := range c.Query(ctxT(t), "SELECT Id FROM Lead") {
		require.NoError(t, err)
		n++
	}
	assert.Zero(t, n)
}

func TestQueryTokenExpiresMidPagination(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 2500})
	c := e.client(t)
	n := 0
	for _, err := range c.Query(ctxT(t), "SELECT Id FROM Contact", WithBatchSize(1000)) {
		require.NoError(t, err)
		n++
		if n == 1 {
			e.org.ExpireTokens() // between page 1 and page 2
		}
	}
	assert.Equal(t, 2500, n, "the query completes")
	assert.Equal(t, int64(2), c.TokenFetches(), "exactly one refresh")
	more := callsOn(e.org, sandbox.RouteQueryMore)
	require.Len(t, more, 3, "page 2 answered 401 once, then pages 2 and 3")
	assert.Equal(t, http.StatusUnauthorized, more[0].Status)
	assert.Equal(t, http.StatusOK, more[1].Status)
	assert.Equal(t, http.StatusOK, more[2].Status)
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)
	errorOf := func(soql string) error {
		for _, err := range c.Query(ctx, soql) {
			if err != nil {
				return err
			}
		}
		return nil
	}
	err := errorOf("SELECT Id FRM Contact")
	assert.Equal(t, "MALFORMED_QUERY", errOf(t, err).Code)
	assert.Equal(t, PermanentTenant, ClassOf(err))

	err = errorOf("SELECT Id, Marketo_Sales_Opt_Out_Typo__c FROM Contact")
	se := errOf(t, err)
	assert.Equal(t, "INVALID_FIELD", se.Code)
	assert.Equal(t, PermanentTenant, se.Class)
	assert.Equal(t, http.StatusBadRequest, se.Status)

	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteQuery, Status: 503, HTML: true, Times: 1})
	err = errorOf("SELECT Id FROM Contact")
	assert.Equal(t, Retryable, ClassOf(err))
}

func TestQueryMoreInvalidLocator(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 500})
	c := e.client(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteQueryMore, ErrorCode: "INVALID_QUERY_LOCATOR", Times: 1})
	var last error
	for _, err := range c.Query(ctxT(t), "SELECT Id FROM Contact", WithBatchSize(200)) {
		last = err
	}
	assert.Equal(t, "INVALID_QUERY_LOCATOR", errOf(t, last).Code)
	assert.Equal(t, Retryable, ClassOf(last), "restart the query")
}

func TestQueryAllIncludesDeleted(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 3, 0)
	require.NoError(t, e.org.Delete(cs[0].ID))
	c := e.client(t)
	count := func(opts ...QueryOption) int {
		n := 0
		for _, err := range c.Query(ctxT(t), "SELECT Id FROM Contact", opts...) {
			require.NoError(t, err)
			n++
		}
		return n
	}
	assert.Equal(t, 2, count())
	assert.Equal(t, 3, count(IncludeDeleted()))
}

func TestQueryIDsChunksByURILength(t *testing.T) {
	e := newEnv(t)
	e.org.Seed(sandbox.SeedSpec{Contacts: 3000, OptedOutShare: 0.3})
	var ids []string
	want := map[string]bool{}
	for i, r := range e.org.Records() {
		if r.Type != "Contact" {
			continue
		}
		want[r.ID] = r.HasOptedOutOfEmail
		if i%2 == 0 {
			ids = append(ids, r.ID[:15]) // 15-char form accepted
		} else {
			ids = append(ids, r.ID)
		}
	}
	ids = append(ids, ids[0], ids[1]) // duplicates are dropped
	c := e.client(t)
	inst, err := c.InstanceURL(ctxT(t))
	require.NoError(t, err)

	got := map[string]bool{}
	for rec, err := range c.QueryIDs(ctxT(t), "Contact", []string{"Id", optOutField}, ids) {
		require.NoError(t, err)
		got[rec.ID] = rec.Bool(optOutField)
	}
	assert.Equal(t, want, got)

	calls := callsOn(e.org, sandbox.RouteQuery)
	// 27 escaped bytes an id ('…', as %27…%27%2C): about 600 ids a query.
	assert.Len(t, calls, 5, "chunks are packed up to the cap, not a small fixed count")
	for _, call := range calls {
		assert.Less(t, call.Status, 400, "no 414")
	}

	// The chunk builder keeps every full URL within the cap.
	soqls, err := c.idChunks(ctxT(t), "t", "Contact", []string{"Id", optOutField}, ids)
	require.NoError(t, err)
	total := 0
	for i, s := range soqls {
		full := inst + "/services/data/" + c.APIVersion() + "/query?q=" + url.QueryEscape(s)
		assert.LessOrEqual(t, len(full), DefaultMaxURILength)
		if i < len(soqls)-1 {
			assert.Greater(t, len(full), DefaultMaxURILength-27, "packed to within one id of the cap")
		}
		total += strings.Count(s, "'") / 2
	}
	assert.Equal(t, 3000, total)
}

func TestQueryIDsSmallCapAndErrors(t *testing.T) {
	e := newEnv(t)
	cs, _ := seed(t, e, 100, 0)
	c := e.client(t, func(c *Config) { c.MaxURILength = 2048 })
	var ids []string
	for _, r := range cs {
		ids = append(ids, r.ID)
	}
	n := 0
	for _, err := range c.QueryIDs(ctxT(t), "Contact", []string{"Id"}, ids) {
		require.NoError(t, err)
		n++
	}
	assert.Equal(t, 100, n)
	assert.Greater(t, len(callsOn(e.org, sandbox.RouteQuery)), 1)

	for _, err := range c.QueryIDs(ctxT(t), "Contact", []string{"Id"}, []string{"bad-id"}) {
		assert.Equal(t, "MALFORMED_ID", errOf(t, err).Code)
	}
	for _, err := range c.QueryIDs(ctxT(t), "Contact", []string{"Id) OR (Name"}, ids) {
		assert.Equal(t, CodeInvalidArgument, errOf(t, err).Code, "no SOQL injection through field names")
	}
}

func TestQueryIDsBeyondCapIs414(t *testing.T) {
	// Guard that the emulator really enforces the cap our chunking respects.
	e := newEnv(t)
	cs, _ := seed(t, e, 1, 0)
	c := e.client(t)
	long := make([]string, 0, 700)
	for range 700 {
		long = append(long, "'"+cs[0].ID+"'")
	}
	soql := fmt.Sprintf("SELECT Id FROM Contact WHERE Id IN (%s)", strings.Join(long, ","))
	for _, err := range c.Query(ctxT(t), soql) {
		se := errOf(t, err)
		assert.Equal(t, http.StatusRequestURITooLong, se.Status)
		assert.Equal(t, PermanentTenant, se.Class)
	}
}

// QueryEmails finds every record of the addresses (Salesforce compares text
// without regard to case), with a quote escaped in its literal and an extra
// condition, in chunks that keep each URL within the cap.
func TestQueryEmailsChunksAndEscapes(t *testing.T) {
	e := newEnv(t)
	want := map[string]bool{}
	var emails []string
	for i := range 120 {
		addr := fmt.Sprintf("person-%03d@dupes.example", i)
		want[e.org.Put(sandbox.Record{Type: "Contact", Email: strings.ToUpper(addr)}).ID] = true
		emails = append(emails, addr)
	}
	want[e.org.Put(sandbox.Record{Type: "Contact", Email: "o'neil@dupes.example"}).ID] = true
	emails = append(emails, "o'neil@dupes.example", "O'NEIL@dupes.example", "")
	e.org.Put(sandbox.Record{Type: "Contact", Email: "other@dupes.example"})
	c := e.client(t, func(c *Config) { c.MaxURILength = 2048 })

	got := map[string]bool{}
	for rec, err := range c.QueryEmails(ctxT(t), "Contact", []string{"Id", "Email"}, emails, "IsDeleted = false") {
		require.NoError(t, err)
		got[rec.ID] = true
	}
	assert.Equal(t, want, got)
	calls := callsOn(e.org, sandbox.RouteQuery)
	assert.Greater(t, len(calls), 1, "chunked to the URI cap")
	for _, call := range calls {
		assert.Less(t, call.Status, 400, "no 414, no malformed query")
	}
	for _, err := range c.QueryEmails(ctxT(t), "Contact; DROP", []string{"Id"}, emails, "") {
		assert.Error(t, err)
	}
}
