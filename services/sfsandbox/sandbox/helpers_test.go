package sandbox

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testClock is a settable clock for Until, session and bulk time tests.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t     testing.TB
	sb    *Sandbox
	local *Local
	srv   *httptest.Server // control API and login host
	clock *testClock
}

func testOrgs() []OrgConfig {
	return []OrgConfig{
		{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", Username: "int@acme.test",
			DailyAPILimit: 1000, CustomFieldInstalled: true, CustomFieldWritable: true, RetiredAPIVersions: []string{"30.0"}},
		{Name: "globex", ClientID: "globex-id", ClientSecret: "globex-secret", DailyAPILimit: 1000},
	}
}

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	clock := &testClock{t: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)}
	cfg := Config{Orgs: testOrgs(), Now: clock.Now}
	for _, m := range mutate {
		m(&cfg)
	}
	sb, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l := ServeLocal(sb, nil)
	t.Cleanup(l.Close)
	return &env{t: t, sb: sb, local: l, srv: l.Control, clock: clock}
}

// base is the org's origin.
func (e *env) base(org string) string { return e.local.OrgURL(org) }

func (e *env) org(name string) *Org { return e.sb.Org(name) }

// resp is a finished HTTP exchange.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (e *env) raw(method, path string, body io.Reader, hdr map[string]string) resp {
	e.t.Helper()
	target := path // relative to the control server unless a URL
	if !strings.HasPrefix(path, "http") {
		target = e.srv.URL + path
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) token(org string) string {
	e.t.Helper()
	o := e.org(org).Config()
	r := e.form(e.base(org)+"/services/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {o.ClientID}, "client_secret": {o.ClientSecret}})
	if r.status != 200 {
		e.t.Fatalf("token: %d %s", r.status, r.body)
	}
	var tok map[string]string
	r.json(e.t, &tok)
	return tok["access_token"]
}

func (e *env) form(path string, v url.Values) resp {
	e.t.Helper()
	return e.raw("POST", path, strings.NewReader(v.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

// api calls a data route of org with a fresh-or-given token.
func (e *env) api(tok, method, org, path string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	h := map[string]string{"Authorization": "Bearer " + tok}
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		h["Content-Type"] = "text/csv"
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
		h["Content-Type"] = "application/json"
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		h[hdr[i]] = hdr[i+1]
	}
	return e.raw(method, e.base(org)+"/services/data/v62.0"+path, rd, h)
}

var (
	reID      = regexp.MustCompile(`\b(003|00Q|005|00D|750|01g)[A-Za-z0-9]{12}([A-Za-z0-9]{3})?\b`)
	reTime    = regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000`)
	reToken   = regexp.MustCompile(`00D[A-Za-z0-9]{12}![A-Za-z0-9_\-]+`)
	reIssued  = regexp.MustCompile(`"issued_at": ?"\d{13}"`)
	reSig     = regexp.MustCompile(`"signature": ?"[^"]+"`)
	reHost    = regexp.MustCompile(`http://127\.0\.0\.1:\d+`)
	reLocator = regexp.MustCompile(`/query/01g[A-Za-z0-9]{15}-`)
)

// normalise replaces volatile values so golden files are stable.
func normalise(b []byte) []byte {
	b = reToken.ReplaceAll(b, []byte("<TOKEN>"))
	b = reLocator.ReplaceAll(b, []byte("/query/<LOCATOR>-"))
	b = reID.ReplaceAll(b, []byte("<ID:$1>"))
	b = reTime.ReplaceAll(b, []byte("<DATETIME>"))
	b = reIssued.ReplaceAll(b, []byte(`"issued_at":"<MS>"`))
	b = reSig.ReplaceAll(b, []byte(`"signature":"<SIG>"`))
	b = reHost.ReplaceAll(b, []byte("http://<HOST>"))
	return b
}

// golden compares status, selected headers and the normalised, indented body
// with testdata/golden/<name>.json.
func golden(t *testing.T, name string, r resp, headers ...string) {
	t.Helper()
	var body any
	if err := json.Unmarshal(r.body, &body); err != nil {
		body = string(r.body)
	}
	h := map[string]string{}
	for _, k := range headers {
		h[k] = r.header.Get(k)
	}
	doc := map[string]any{"status": r.status, "headers": h, "body": body}
	got, _ := json.MarshalIndent(doc, "", "  ")
	got = append(normalise(got), '\n')
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("golden %s mismatch:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// errCode returns the first errorCode of a JSON error array.
func errCode(t testing.TB, r resp) string {
	t.Helper()
	var errs []map[string]any
	if err := json.Unmarshal(r.body, &errs); err != nil || len(errs) == 0 {
		t.Fatalf("not an error array (%d): %s", r.status, r.body)
	}
	s, _ := errs[0]["errorCode"].(string)
	return s
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
