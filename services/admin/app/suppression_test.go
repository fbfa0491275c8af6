package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

const (
	tokenA = "tenant-a-token-0123456789"
	tokenB = "tenant-b-token-0123456789"
	// Two Contacts and a Lead, 18 characters with valid checksums.
	sfAda   = "003000000000001AAA"
	sfAdaL  = "00Q000000000001EAA"
	sfBob   = "003000000000002AAA"
	sfOther = "003000000000009AAA"
)

func init() {
	// The install's key, as process.Main sets it from OPTOUT_EMAIL_HASH_KEY.
	logx.SetEmailHashKey([]byte("suppression-test-key-0123456789"))
}

type answer struct {
	Tenant, Result, Reason, MatchedBy string
	Since, AsOf                       time.Time
	Complete                          bool
	Records                           []struct {
		SalesConnectID, SalesforceID, ObjectType, Source, Reason, SyncState string
		Suppressed                                                          bool
		Since                                                               time.Time
	}
	Error, Code string
}

// suppressionStack starts the admin service with tokens of tenants a and b
// and folds a few persons into tenant a's ledger the way ingest does.
func suppressionStack(t *testing.T) (base string, at time.Time) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte("# tenant:token\na:"+tokenA+"\nb:"+tokenB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, a := startApp(t, map[string]string{"OPTOUT_SUPPRESSION_TOKENS_FILE": file})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	led, err := ledger.New(ctx, a.Prov)
	if err != nil {
		t.Fatal(err)
	}
	w := led.Writer("a", optout.StandardField)
	at = time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	events := []optout.EventInput{
		// Ada opted out as a Contact; her Lead shares the address and has no opt-out.
		{ID: "e1", Action: optout.OptOut, OccurredAt: at, Source: "EMAIL_LINK", Reason: "clicked unsubscribe",
			SalesConnectID: "sc-ada", SalesforceID: sfAda, ObjectType: "Contact", EmailHash: logx.HashEmail("ada@example.com")},
		{ID: "e2", Action: optout.Resubscribe, OccurredAt: at, Source: "EMAIL_LINK",
			SalesforceID: sfAdaL, ObjectType: "Lead", EmailHash: logx.HashEmail("Ada@Example.com")},
		// Bob opted out and later resubscribed.
		{ID: "e3", Action: optout.OptOut, OccurredAt: at, Source: "EMAIL_LINK", SalesConnectID: "sc-bob", SalesforceID: sfBob,
			ObjectType: "Contact", EmailHash: logx.HashEmail("bob@example.com")},
		{ID: "e4", Action: optout.Resubscribe, OccurredAt: at.Add(time.Hour), Source: "USER_SETTINGS", SalesConnectID: "sc-bob"},
	}
	for _, in := range events {
		if _, err := w.Ingest(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	// Caught up once the last write is in the index (an answer from an index
	// that has not read it yet would be 503 unknown, or Bob still suppressed).
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, ans := suppressionGet(t, base, "a", "salesConnectId=sc-bob", tokenA)
		if code == http.StatusOK && ans.Result == "allowed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index never caught up: %d %+v", code, ans)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return base, at
}

func suppressionGet(t *testing.T, base, tenant, query, token string) (int, answer) {
	t.Helper()
	code, body := get(t, base+"/v1/tenants/"+tenant+"/suppression?"+query, bearer(token))
	var a answer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("%s: not JSON (%d): %s", query, code, body)
	}
	return code, a
}

func bearer(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + token
}

// TestSuppressionAPIAnswersByEmailAndIds: a suppressed person is found by
// email, Sales Connect id and Salesforce id (15 or 18 characters) with the
// reason and since when; an unknown person and a resubscribed one are allowed.
func TestSuppressionAPIAnswersByEmailAndIds(t *testing.T) {
	t.Parallel()
	base, at := suppressionStack(t)
	for _, q := range []string{
		"email=" + url.QueryEscape("ada@example.com"),
		"email=" + url.QueryEscape(" ADA@example.com"[1:]),
		"salesConnectId=sc-ada",
		"salesforceId=" + sfAda,
		"salesforceId=" + sfAda[:15],
	} {
		code, a := suppressionGet(t, base, "a", q, tokenA)
		if code != http.StatusOK || a.Result != "suppressed" || !a.Since.Equal(at) || !a.Complete ||
			!strings.Contains(a.Reason, "EMAIL_LINK") || !strings.Contains(a.Reason, "clicked unsubscribe") {
			t.Errorf("%s: %d %+v, want suppressed since %s with the source and reason", q, code, a, at)
			continue
		}
		var ada bool
		for _, r := range a.Records {
			if r.SalesforceID == sfAda && r.SalesConnectID == "sc-ada" && r.Suppressed && r.ObjectType == "Contact" && r.Since.Equal(at) {
				ada = true
			}
		}
		if !ada {
			t.Errorf("%s: records %+v lack Ada's Contact", q, a.Records)
		}
	}
	// By email both records sharing the address are listed, the Lead not suppressed.
	if _, a := suppressionGet(t, base, "a", "email=ada%40example.com", tokenA); len(a.Records) != 2 {
		t.Errorf("by email: records %+v, want the Contact and the Lead", a.Records)
	}
	for _, q := range []string{"email=nobody%40example.com", "salesConnectId=sc-nobody", "salesforceId=" + sfOther,
		"salesConnectId=sc-bob", "email=bob%40example.com", "salesforceId=" + sfBob, "salesforceId=" + sfAdaL} {
		code, a := suppressionGet(t, base, "a", q, tokenA)
		if code != http.StatusOK || a.Result != "allowed" || !a.Since.IsZero() {
			t.Errorf("%s: %d %+v, want allowed", q, code, a)
		}
	}
	if _, a := suppressionGet(t, base, "a", "salesConnectId=sc-bob", tokenA); len(a.Records) != 1 || a.Records[0].Suppressed ||
		!strings.Contains(a.Reason, "resubscribed") {
		t.Errorf("Bob: %+v, want his record, not suppressed, resubscribed", a)
	}
	// Tenant b's token sees tenant b, where Ada is unknown.
	if code, a := suppressionGet(t, base, "b", "salesConnectId=sc-ada", tokenB); code != http.StatusOK || a.Result != "allowed" {
		t.Errorf("tenant b: %d %+v, want allowed", code, a)
	}
}

// TestSuppressionAPIRefusesWhatItShould: tokens are scoped to a tenant, and
// a query that is not exactly one well-formed lookup says what is wrong.
func TestSuppressionAPIRefusesWhatItShould(t *testing.T) {
	t.Parallel()
	base, _ := suppressionStack(t)
	for _, c := range []struct {
		name, tenant, query, token string
		code                       int
		say                        string
	}{
		{"no token", "a", "salesConnectId=x", "", 401, "Bearer"},
		{"bad token", "a", "salesConnectId=x", "not-a-token-of-anyone-at-all", 401, "not valid"},
		{"another tenant's token", "b", "salesConnectId=x", tokenA, 403, `tenant "b"`},
		{"no query", "a", "", tokenA, 400, "exactly one"},
		{"two lookups", "a", "email=a%40b.c&salesConnectId=x", tokenA, 400, "email and salesConnectId"},
		{"a lookup twice", "a", "salesConnectId=x&salesConnectId=y", tokenA, 400, "given 2 times"},
		{"unknown parameter", "a", "emial=a%40b.c", tokenA, 400, `"emial"`},
		{"malformed email", "a", "email=not-an-address", tokenA, 400, "email is not an address"},
		{"short id", "a", "salesforceId=003abc", tokenA, 400, "15 or 18"},
		{"bad checksum", "a", "salesforceId=003000000000001AAB", tokenA, 400, "checksum"},
		{"an Account id", "a", "salesforceId=001000000000001AAA", tokenA, 400, "not a Contact"},
		{"empty id", "a", "salesConnectId=", tokenA, 400, "salesConnectId must be"},
	} {
		code, a := suppressionGet(t, base, c.tenant, c.query, c.token)
		if code != c.code || !strings.Contains(a.Error, c.say) || a.Result != "" {
			t.Errorf("%s: %d %+v, want %d saying %q", c.name, code, a, c.code, c.say)
		}
	}
}

// TestSuppressionAPIMatchesItsOpenAPI checks services/admin/openapi.yaml is
// a valid OpenAPI document and that the server's real answers, of every
// status it gives, are what it documents.
func TestSuppressionAPIMatchesItsOpenAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	base, _ := suppressionStack(t)
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, c := range []struct{ tenant, query, token string }{
		{"a", "email=ada%40example.com", tokenA},
		{"a", "salesforceId=" + sfBob, tokenA},
		{"a", "salesConnectId=sc-nobody", tokenA},
		{"a", "salesforceId=003abc", tokenA},
		{"a", "", tokenA},
		{"a", "salesConnectId=x", ""},
		{"b", "salesConnectId=x", tokenA},
	} {
		req, err := http.NewRequest("GET", base+"/v1/tenants/"+c.tenant+"/suppression?"+c.query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[resp.StatusCode] = true
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s: no route in openapi.yaml: %v", req.URL, err)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
			Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
			t.Errorf("%s: %d %s\ndoes not match openapi.yaml: %v", req.URL, resp.StatusCode, body, err)
		}
	}
	for _, code := range []int{200, 400, 401, 403} {
		if !seen[code] {
			t.Errorf("no answer of status %d was checked", code)
		}
	}
}

// TestSuppressionAPIWithoutTokensSaysHowToSetThemUp: not configured, it
// answers 503 naming the variable, in the documented shape.
func TestSuppressionAPIWithoutTokensSaysHowToSetThemUp(t *testing.T) {
	t.Parallel()
	base := start(t, nil)
	code, body := get(t, base+"/v1/tenants/a/suppression?salesConnectId=x", "Bearer "+tokenA)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "OPTOUT_SUPPRESSION_TOKENS_FILE") {
		t.Errorf("%d %s", code, body)
	}
}
