package sandbox

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultKinds(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	patch := func() resp {
		return e.api(tok, "PATCH", "acme", "/sobjects/Contact/"+c.ID, map[string]any{"HasOptedOutOfEmail": true})
	}
	cases := []struct {
		name   string
		f      Fault
		status int
		code   string
		msg    string
		html   bool
		retry  string
	}{
		{"session", Fault{Status: 401}, 401, "INVALID_SESSION_ID", "Session expired or invalid", false, ""},
		{"total requests", Fault{ErrorCode: "REQUEST_LIMIT_EXCEEDED"}, 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", false, ""},
		{"concurrent", Fault{ErrorCode: "REQUEST_LIMIT_EXCEEDED", Message: "ConcurrentPerOrgLongTxn Limit exceeded."}, 403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", false, ""},
		{"lock row", Fault{Route: RouteSObjectPatch, RecordID: c.ID, ErrorCode: "UNABLE_TO_LOCK_ROW"}, 400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records: " + c.ID, false, ""},
		{"503 json", Fault{Status: 503, RetryAfter: "7"}, 503, "SERVER_UNAVAILABLE", "Server too busy", false, "7"},
		{"503 html", Fault{Status: 503, HTML: true}, 503, "", "", true, ""},
		{"502 html", Fault{Status: 502, HTML: true}, 502, "", "", true, ""},
		{"420 html", Fault{Status: 420, HTML: true, RetryAfter: "30"}, 420, "", "", true, "30"},
		{"500", Fault{Status: 500}, 500, "UNKNOWN_EXCEPTION", "An unexpected error occurred", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o.ClearFaults()
			o.InjectFault(tc.f)
			r := patch()
			if r.status != tc.status || r.header.Get("Retry-After") != tc.retry {
				t.Fatalf("status %d retry %q: %s", r.status, r.header.Get("Retry-After"), r.body)
			}
			if tc.html {
				if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "<html>") {
					t.Errorf("not html: %s", r.body)
				}
				return
			}
			var errs []apiError
			r.json(t, &errs)
			if errs[0].ErrorCode != tc.code || !strings.HasPrefix(errs[0].Message, tc.msg) {
				t.Errorf("got %+v", errs[0])
			}
		})
	}
	o.ClearFaults()
	if r := patch(); r.status != 204 {
		t.Errorf("after clear: %d", r.status)
	}
	// a fault on another record does not touch this one
	o.InjectFault(Fault{RecordID: makeID(prefixContact, 5).String(), Status: 500})
	if r := patch(); r.status != 204 {
		t.Errorf("other record's fault fired: %d", r.status)
	}
}

func TestFaultMatching(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	tok := e.token("acme")
	limits := func() int { return e.api(tok, "GET", "acme", "/limits", nil).status }
	// Skip 2, Times 2: calls 3 and 4 fail, then the fault is gone.
	o.InjectFault(Fault{Route: RouteLimits, Status: 503, Skip: 2, Times: 2})
	var got []int
	for i := 0; i < 6; i++ {
		got = append(got, limits())
	}
	if want := []int{200, 200, 503, 503, 200, 200}; !equalInts(got, want) {
		t.Errorf("skip/times: %v", got)
	}
	// Route scoping
	o.InjectFault(Fault{Route: RouteDescribe, Status: 500})
	if limits() != 200 {
		t.Error("fault on describe hit limits")
	}
	o.ClearFaults()
	// Until
	o.InjectFault(Fault{Status: 500, Until: e.clock.Now().Add(time.Minute)})
	if limits() != 500 {
		t.Error("until: not active")
	}
	e.clock.Advance(2 * time.Minute)
	if limits() != 200 {
		t.Error("until: still active")
	}
	// Share: about half of 400 calls, with a seeded generator
	o.InjectFault(Fault{Route: RouteLimits, Status: 503, Share: 0.5})
	fails := 0
	for i := 0; i < 200; i++ {
		if limits() == 503 {
			fails++
		}
	}
	if fails < 50 || fails > 150 {
		t.Errorf("share 0.5 gave %d/200", fails)
	}
	o.ClearFaults()
	// Token endpoint invalid_grant
	id := o.InjectFault(Fault{Route: RouteToken, ErrorCode: "invalid_grant", Message: "authentication failure", Times: 1})
	r := e.form(e.base("acme")+"/services/oauth2/token", map[string][]string{"grant_type": {"client_credentials"}, "client_id": {"acme-id"}, "client_secret": {"acme-secret"}})
	if r.status != 400 || !strings.Contains(string(r.body), `"error":"invalid_grant"`) {
		t.Errorf("token fault: %d %s", r.status, r.body)
	}
	if calls := o.Calls(); calls[len(calls)-1].FaultID != id {
		t.Errorf("call log fault id %q", calls[len(calls)-1].FaultID)
	}
	// Delay only: answers normally (no timing assertion)
	o.InjectFault(Fault{Route: RouteLimits, Delay: time.Millisecond, Times: 1})
	if limits() != 200 {
		t.Error("delay fault changed the answer")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultMidPagination(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	o.Seed(SeedSpec{Contacts: 500})
	tok := e.token("acme")
	o.InjectFault(Fault{Route: RouteQueryMore, Status: 401, Skip: 1, Times: 1})
	r := e.api(tok, "GET", "acme", q("SELECT Id FROM Contact"), nil, "Sforce-Query-Options", "batchSize=200")
	var page queryPage
	r.json(t, &page)
	next := func() resp {
		return e.raw("GET", e.base("acme")+page.NextRecordsURL, nil, map[string]string{"Authorization": "Bearer " + tok})
	}
	r = next()
	page = queryPage{}
	r.json(t, &page)
	if r.status != 200 {
		t.Fatalf("page 2: %d", r.status)
	}
	if r := next(); r.status != 401 || errCode(t, r) != "INVALID_SESSION_ID" {
		t.Errorf("page 3: %d %s", r.status, r.body)
	}
	if r := next(); r.status != 200 {
		t.Errorf("retry of page 3: %d", r.status)
	}
}

func TestDropConnection(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	before := o.Put(Record{Type: "Contact"})
	after := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	send := func(id string) error {
		req, _ := http.NewRequest("PATCH", e.base("acme")+"/services/data/v62.0/sobjects/Contact/"+id, strings.NewReader(`{"HasOptedOutOfEmail":true}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := e.srv.Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	o.InjectFault(Fault{Route: RouteSObjectPatch, RecordID: before.ID, DropBeforeWrite: true})
	o.InjectFault(Fault{Route: RouteSObjectPatch, RecordID: after.ID, DropAfterWrite: true})
	if err := send(before.ID); err == nil {
		t.Error("DropBeforeWrite answered")
	}
	if err := send(after.ID); err == nil {
		t.Error("DropAfterWrite answered")
	}
	if r, _ := o.Get(before.ID); r.HasOptedOutOfEmail {
		t.Error("DropBeforeWrite applied the write")
	}
	if r, _ := o.Get(after.ID); !r.HasOptedOutOfEmail {
		t.Error("DropAfterWrite did not apply the write")
	}
	// per-record DropAfterWrite inside a collection
	c2 := o.Put(Record{Type: "Contact"})
	o.ClearFaults()
	o.InjectFault(Fault{Route: RouteCollectionsUpdate, RecordID: c2.ID, DropAfterWrite: true, Times: 1})
	req, _ := http.NewRequest("PATCH", e.base("acme")+"/services/data/v62.0/composite/sobjects",
		strings.NewReader(`{"records":[{"attributes":{"type":"Contact"},"id":"`+c2.ID+`","HasOptedOutOfEmail":true}]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	if res, err := e.srv.Client().Do(req); err == nil {
		res.Body.Close()
		t.Error("collection DropAfterWrite answered")
	}
	if r, _ := o.Get(c2.ID); !r.HasOptedOutOfEmail {
		t.Error("collection DropAfterWrite did not apply the write")
	}
}
