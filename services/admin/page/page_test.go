package page_test

import (
	"context"
	"encoding/json"
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

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/net/html"

	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/platform/adminhttp"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/store/ledger"

	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const (
	alicePW = "correct-horse-battery-staple"
	token   = "0123456789abcdef-token"
)

type ui struct {
	t         *testing.T
	ctx       context.Context
	url       string
	store     tenant.Store
	sb        *sandbox.Sandbox
	p         *natsx.Provisioned
	tokenFile string
}

type option func(*page.Deps)

func newUI(t *testing.T, opts ...option) *ui {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{
		{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", CustomFieldInstalled: true, CustomFieldWritable: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sf := sandbox.ServeLocal(sb, nil)
	t.Cleanup(sf.Close)
	env := map[string]string{"SF_ACME_TOKEN_URL": sf.OrgURL("acme"), "SF_ACME_CLIENT_ID": "acme-id", "SF_ACME_CLIENT_SECRET": "acme-secret"}

	dir := t.TempDir()
	users, tokenFile := filepath.Join(dir, "users"), filepath.Join(dir, "token")
	if err := os.WriteFile(users, []byte("# admins\nalice:"+alicePW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := tenant.Store{KV: p.Tenants}
	d := page.Deps{
		Status: &tenantstatus.Inspector{
			JS: p.JS, Topology: p.Topology, Settings: store, Health: tenant.HealthStore{KV: p.Health},
			Salesforce: tenantstatus.SourceClients{Source: sfcreds.Source{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}},
		},
		Auth: page.Auth{UsersFile: users, TokenFile: tokenFile},
		Log:  zerolog.New(zerolog.NewTestWriter(t)),
	}
	for _, o := range opts {
		o(&d)
	}
	if d.DLQ != nil { // withDLQ: this test's dead letters
		d.DLQ = &deadletter.DLQ{JS: p.JS, Topology: p.Topology}
	}
	if d.Proof != nil { // withProof: the proof pages read this test's ledger
		l, err := ledger.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		d.Proof = &proof.Source{Ledger: l, JS: p.JS, Topology: p.Topology}
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", page.New(d))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &ui{t: t, ctx: ctx, url: srv.URL, store: store, sb: sb, p: p, tokenFile: tokenFile}
}

// do sends a request as alice (basic auth) unless the caller set auth.
func (u *ui) do(method, path string, form url.Values, edit func(*http.Request)) (int, http.Header, string) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(u.ctx, method, u.url+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.SetBasicAuth("alice", alicePW)
	if edit != nil {
		edit(req)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (u *ui) get(path string) string {
	u.t.Helper()
	code, _, body := u.do("GET", path, nil, nil)
	if code != http.StatusOK {
		u.t.Fatalf("GET %s: %d\n%s", path, code, body)
	}
	return body
}

var hiddenRe = regexp.MustCompile(`<input type="hidden" name="(csrf|revision)" value="([^"]*)">`)

// formValues returns the page's form as stored, ready to post.
func formValues(t *testing.T, body string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, m := range hiddenRe.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], m[2])
	}
	if v.Get("csrf") == "" {
		t.Fatalf("no csrf field in:\n%s", body)
	}
	v.Set("field", "email-opt-out")
	v.Set("custom-field", tenant.DefaultCustomField)
	v.Set("schedule-time", "20:00")
	v.Set("schedule-zone", "America/Los_Angeles")
	v.Set("conflict-policy", "optout-wins")
	return v
}

func TestEveryRequestNeedsCredentials(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	none := func(r *http.Request) { r.Header.Del("Authorization") }
	code, h, body := u.do("GET", "/admin/", nil, none)
	if code != http.StatusUnauthorized || !strings.Contains(strings.Join(h.Values("WWW-Authenticate"), ","), `Basic realm="optout-sync admin"`) {
		t.Fatalf("anonymous read: %d %v\n%s", code, h, body)
	}
	if code, _, _ := u.do("GET", "/admin/style.css", nil, none); code != http.StatusUnauthorized {
		t.Fatalf("anonymous stylesheet: %d", code)
	}
	if code, _, _ := u.do("POST", "/admin/tenants/acme", url.Values{"field": {"sales-opt-out"}}, none); code != http.StatusUnauthorized {
		t.Fatalf("anonymous write: %d", code)
	}
	if code, _, _ := u.do("GET", "/admin/", nil, func(r *http.Request) { r.SetBasicAuth("alice", "wrong-password-wrong") }); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}
	if code, _, _ := u.do("GET", "/admin/", nil, func(r *http.Request) { r.SetBasicAuth("mallory", alicePW) }); code != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", code)
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	if code, _, body := u.do("GET", "/admin/", nil, bearer(token)); code != http.StatusOK || !strings.Contains(body, "Signed in as token") {
		t.Fatalf("bearer token: %d\n%s", code, body)
	}
	// A rotated Secret applies without a restart.
	if err := os.WriteFile(u.tokenFile, []byte("rotated-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(u.tokenFile, future, future); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := u.do("GET", "/admin/", nil, bearer(token)); code != http.StatusUnauthorized {
		t.Fatalf("old token after rotation: %d", code)
	}
	if code, _, _ := u.do("GET", "/admin/", nil, bearer("rotated-token-0123456789")); code != http.StatusOK {
		t.Fatalf("new token after rotation: %d", code)
	}
}

func TestWithoutCredentialsConfiguredThePageIsOff(t *testing.T) {
	t.Parallel()
	u := newUI(t, func(d *page.Deps) { d.Auth = page.Auth{} })
	code, _, body := u.do("GET", "/admin/", nil, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "OPTOUT_ADMIN_USERS_FILE") {
		t.Fatalf("unconfigured: %d\n%s", code, body)
	}
}

func TestSaveChangesTheSettingsAndRedirects(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	body := u.get("/admin/tenants/acme")
	v := formValues(t, body)
	v.Set("sync", "on")
	v.Set("field", "sales-opt-out")
	v.Set("schedule-time", "21:30")
	code, h, body := u.do("POST", "/admin/tenants/acme", v, nil)
	if code != http.StatusSeeOther || h.Get("Location") != "/admin/tenants/acme?saved=1" {
		t.Fatalf("save: %d %v\n%s", code, h, body)
	}
	s, err := u.store.Get(u.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !s.SyncEnabled || s.Field != tenant.SalesOptOut || s.ScheduleTime != "21:30" || s.TargetField() != tenant.DefaultCustomField {
		t.Fatalf("stored settings = %+v", s)
	}
	after := u.get("/admin/tenants/acme?saved=1")
	for _, want := range []string{`role="status"`, "Settings saved.", "Opt-outs are now written to <code>Marketo_Sales_Opt_Out__c</code>", `value="sales-opt-out" checked`, `id="sync" name="sync" value="on" checked`} {
		if !strings.Contains(after, want) {
			t.Errorf("page after saving lacks %q", want)
		}
	}

	// Posting the old form again is refused: its revision is stale.
	code, _, body = u.do("POST", "/admin/tenants/acme", v, nil)
	if code != http.StatusConflict || !strings.Contains(body, "someone else changed these settings") {
		t.Fatalf("stale form: %d\n%s", code, body)
	}
}

// Change Data Capture is a setting of the page too, so saving the form
// never turns it off behind the admin's back.
func TestSaveKeepsAndChangesCDC(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	v := formValues(t, u.get("/admin/tenants/acme"))
	v.Set("sync", "on")
	v.Set("cdc", "on")
	v.Set("cdc-topic", "/data/OptOutSync__chn")
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", code, body)
	}
	s, err := u.store.Get(u.ctx, "acme")
	if err != nil || !s.CDCEnabled || s.Topic() != "/data/OptOutSync__chn" {
		t.Fatalf("stored settings = %+v, %v", s, err)
	}
	// The form as shown now (CDC on, its channel), submitted with another
	// change as a browser would, keeps CDC on.
	page := u.get("/admin/tenants/acme")
	for _, want := range []string{`id="cdc" name="cdc" value="on" checked`, `name="cdc-topic" value="/data/OptOutSync__chn"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	v = formValues(t, page)
	v.Set("sync", "on")
	v.Set("cdc", "on")
	v.Set("cdc-topic", "/data/OptOutSync__chn")
	v.Set("schedule-time", "22:00")
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusSeeOther {
		t.Fatalf("second save: %d\n%s", code, body)
	}
	if s, err = u.store.Get(u.ctx, "acme"); err != nil || !s.CDCEnabled || s.CDCTopic != "/data/OptOutSync__chn" || s.ScheduleTime != "22:00" {
		t.Fatalf("after a second save: %+v, %v", s, err)
	}
	v = formValues(t, u.get("/admin/tenants/acme"))
	v.Set("cdc-topic", "/event/Nope__e")
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusUnprocessableEntity || !strings.Contains(body, "Change Data Capture topic") {
		t.Fatalf("bad topic: %d\n%s", code, body)
	}
}

// Duplicates by email is off by default and a switch of the page: saved
// on, shown on, kept on when the form is saved again with another change,
// turned off by unchecking it.
func TestSaveKeepsAndChangesDuplicatesByEmail(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	page := u.get("/admin/tenants/acme")
	if !strings.Contains(page, `id="duplicates" name="duplicates" value="on" aria-describedby`) {
		t.Fatal("the duplicates switch is missing or on by default")
	}
	v := formValues(t, page)
	v.Set("duplicates", "on")
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", code, body)
	}
	if s, err := u.store.Get(u.ctx, "acme"); err != nil || !s.DuplicatesByEmail {
		t.Fatalf("stored settings = %+v, %v", s, err)
	}
	page = u.get("/admin/tenants/acme")
	if !strings.Contains(page, `id="duplicates" name="duplicates" value="on" checked`) {
		t.Fatal("the page does not show the switch on")
	}
	// The form as shown (the switch checked, so a browser sends it) saved
	// with another change keeps it on.
	v = formValues(t, page)
	v.Set("duplicates", "on")
	v.Set("schedule-time", "22:00")
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusSeeOther {
		t.Fatalf("second save: %d\n%s", code, body)
	}
	if s, err := u.store.Get(u.ctx, "acme"); err != nil || !s.DuplicatesByEmail || s.ScheduleTime != "22:00" {
		t.Fatalf("after a second save: %+v, %v", s, err)
	}
	v = formValues(t, u.get("/admin/tenants/acme"))
	if code, _, body := u.do("POST", "/admin/tenants/acme", v, nil); code != http.StatusSeeOther {
		t.Fatalf("third save: %d\n%s", code, body)
	}
	if s, err := u.store.Get(u.ctx, "acme"); err != nil || s.DuplicatesByEmail {
		t.Fatalf("after unchecking: %+v, %v", s, err)
	}
}

func TestInvalidInputIsExplainedAndNotStored(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	v := formValues(t, u.get("/admin/tenants/acme"))
	v.Set("field", "sales-opt-out")
	v.Set("custom-field", "Sales Opt Out")
	v.Set("schedule-time", "8pm")
	code, _, body := u.do("POST", "/admin/tenants/acme", v, nil)
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid form: %d\n%s", code, body)
	}
	for _, want := range []string{
		`<a href="#custom-field">Enter the API name of a checkbox field, ending in __c`,
		`<a href="#schedule-time">Enter the time of the nightly sync as HH:MM`,
		`value="Sales Opt Out"`, `aria-invalid="true"`, `aria-describedby="custom-field-hint custom-field-error"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("error page lacks %q", want)
		}
	}
	if s, _, _ := u.store.GetRevision(u.ctx, "acme"); s != tenant.Default("acme") {
		t.Fatalf("invalid form changed the settings: %+v", s)
	}
}

func TestFormsNeedTheirCSRFToken(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	v := formValues(t, u.get("/admin/tenants/acme"))
	noToken := url.Values{}
	for k, vals := range v {
		if k != "csrf" {
			noToken[k] = vals
		}
	}
	if code, _, _ := u.do("POST", "/admin/tenants/acme", noToken, nil); code != http.StatusForbidden {
		t.Fatalf("post without the token: %d", code)
	}
	// A token is bound to the tenant it was issued for.
	if code, _, _ := u.do("POST", "/admin/tenants/globex", v, nil); code != http.StatusForbidden {
		t.Fatalf("acme's token used for globex: %d", code)
	}
	// A browser on another site cannot post, even with a valid token.
	if code, _, _ := u.do("POST", "/admin/tenants/acme", v, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }); code != http.StatusForbidden {
		t.Fatalf("cross-site post: %d", code)
	}
	if s, _, _ := u.store.GetRevision(u.ctx, "acme"); s != tenant.Default("acme") {
		t.Fatalf("a refused post changed the settings: %+v", s)
	}
}

func TestFailingPrerequisiteIsExplained(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	if _, _, err := u.store.Update(u.ctx, "acme", func(s *tenant.Settings) error {
		s.SyncEnabled, s.Field = true, tenant.SalesOptOut
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ok := u.get("/admin/tenants/acme")
	if !strings.Contains(ok, "<strong>Ready.</strong>") {
		t.Fatalf("working setup not shown as ready:\n%s", ok)
	}
	u.sb.Org("acme").SetCustomField(false, false)
	// The check is cached; "Check again" (a POST with the page's token)
	// forces a fresh one and redirects back to the page.
	code, hdr, body := u.do("POST", "/admin/tenants/acme/recheck", url.Values{"csrf": {formValues(t, ok).Get("csrf")}}, nil)
	if code != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/admin/tenants/acme") {
		t.Fatalf("recheck: %d %q\n%s", code, hdr.Get("Location"), body)
	}
	body = u.get("/admin/tenants/acme")
	for _, want := range []string{
		"<strong>Not ready.</strong>",
		"Salesforce is not ready for this tenant",
		"Marketo_Sales_Opt_Out__c is missing on Contact and Lead.",
		"Install the sales opt-out checkbox Marketo_Sales_Opt_Out__c on Lead and Contact",
		"Contact missing; Lead missing",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// TestRecheckNeedsAPostWithTheToken: a fresh check spends the org's API
// calls, so neither a GET (which any site can trigger) nor a forged post
// may force one.
func TestRecheckNeedsAPostWithTheToken(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	first := u.get("/admin/tenants/acme")
	// Every live check calls the org; nothing else on the page does.
	orgCalls := func() int { return len(u.sb.Org("acme").Calls()) }
	before := orgCalls()
	if before == 0 {
		t.Fatal("the first page view ran no live check")
	}
	u.get("/admin/tenants/acme?recheck=1")
	if got := orgCalls(); got != before {
		t.Fatalf("a GET with ?recheck=1 ran a live check (%d calls to the org, want %d)", got, before)
	}
	if code, _, _ := u.do("POST", "/admin/tenants/acme/recheck", url.Values{}, nil); code != http.StatusForbidden {
		t.Fatalf("recheck without the token: %d, want 403", code)
	}
	if code, _, _ := u.do("POST", "/admin/tenants/acme/recheck", url.Values{"csrf": {formValues(t, first).Get("csrf")}},
		func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }); code != http.StatusForbidden {
		t.Fatalf("cross-site recheck: %d, want 403", code)
	}
	if got := orgCalls(); got != before {
		t.Fatalf("a refused recheck ran a live check (%d calls to the org, want %d)", got, before)
	}
	if code, _, _ := u.do("POST", "/admin/tenants/acme/recheck", url.Values{"csrf": {formValues(t, first).Get("csrf")}}, nil); code != http.StatusSeeOther {
		t.Fatalf("recheck with the token: %d, want 303", code)
	}
	if got := orgCalls(); got <= before {
		t.Fatal("a recheck with the token ran no live check")
	}
}

type runsPanel struct{ err error }

func (runsPanel) ID() string      { return "nightly-runs" }
func (runsPanel) Heading() string { return "Last nightly runs" }
func (p runsPanel) Render(_ context.Context, w io.Writer, tenant string) error {
	if p.err != nil {
		return p.err
	}
	_, err := io.WriteString(w, "<p>3 runs for "+tenant+"</p>")
	return err
}

func TestPanelsAreShownInTheirOwnSection(t *testing.T) {
	t.Parallel()
	u := newUI(t, func(d *page.Deps) { d.Panels = []page.Panel{runsPanel{}} })
	body := u.get("/admin/tenants/acme")
	if !strings.Contains(body, `<section aria-labelledby="nightly-runs-h">`+"\n"+`<h2 id="nightly-runs-h">Last nightly runs</h2>`+"\n<p>3 runs for acme</p>") {
		t.Fatalf("panel missing:\n%s", body)
	}
	u2 := newUI(t, func(d *page.Deps) { d.Panels = []page.Panel{runsPanel{err: io.ErrUnexpectedEOF}} })
	if body := u2.get("/admin/tenants/acme"); !strings.Contains(body, "Could not load this section: unexpected EOF") {
		t.Fatalf("panel error hidden:\n%s", body)
	}
}

// TestMountsOnTheAdminServer is the wiring the admin service uses: the page under
// /admin/ next to /metrics, /healthz and /readyz, which stay open.
func TestMountsOnTheAdminServer(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	srv := adminhttp.New("127.0.0.1:0", nil, adminhttp.Options{})
	srv.Handle("/admin/", page.New(page.Deps{
		Status: &tenantstatus.Inspector{JS: u.p.JS, Topology: u.p.Topology, Settings: u.store, Health: tenant.HealthStore{KV: u.p.Health}},
		Auth:   page.Auth{Token: token},
	}))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	get := func(path, auth string) int {
		req, _ := http.NewRequestWithContext(u.ctx, "GET", ts.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code := get("/admin/tenants/acme", ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous /admin/tenants/acme: %d", code)
	}
	if code := get("/admin/tenants/acme", "Bearer "+token); code != http.StatusOK {
		t.Errorf("/admin/tenants/acme with the token: %d", code)
	}
}

func TestTenantListAndHeaders(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	if err := u.store.Put(u.ctx, tenant.Default("acme")); err != nil {
		t.Fatal(err)
	}
	code, h, body := u.do("GET", "/admin/", nil, nil)
	if code != http.StatusOK || !strings.Contains(body, `<a href="/admin/tenants/acme">acme</a>`) {
		t.Fatalf("list: %d\n%s", code, body)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", h.Get("Cache-Control"))
	}
	if code, _, _ := u.do("GET", "/admin/tenants/a.b", nil, nil); code != http.StatusNotFound {
		t.Errorf("invalid tenant id: %d", code)
	}
}

// TestPagesAreAccessible checks the rules a screen reader depends on: every
// control has a label, radio groups have a fieldset and legend, one h1, a
// language, unique ids, references that resolve, and no scripts.
func TestPagesAreAccessible(t *testing.T) {
	t.Parallel()
	u := newUI(t, withProof, withDLQ)
	u.optOut("evt-1", "sc-42", "003RO0000035WQgYAM", "pat@example.com", true)
	u.deadLetter("evt-dl", "ENTITY_IS_DELETED", nil)
	v := formValues(t, u.get("/admin/tenants/acme"))
	v.Set("custom-field", "bad")
	_, _, invalid := u.do("POST", "/admin/tenants/acme", v, nil)
	_, _, badID := u.do("POST", "/admin/tenants/acme/person", url.Values{"id": {"1"}, "by": {"sf"}}, nil)
	for name, body := range map[string]string{"tenant": u.get("/admin/tenants/acme"), "invalid form": invalid, "list": u.get("/admin/"),
		"person": u.get("/admin/tenants/acme/person?id=sc-42"), "person search": u.get("/admin/tenants/acme/person"), "bad id": badID} {
		doc, err := html.Parse(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ids, labels := map[string]int{}, map[string]bool{}
		var controls, refs []string
		h1, fieldsets, legends := 0, 0, 0
		var walk func(n *html.Node, inRadioFieldset bool)
		walk = func(n *html.Node, inFieldset bool) {
			if n.Type == html.ElementNode {
				a := attrs(n)
				if id := a["id"]; id != "" {
					ids[id]++
				}
				switch n.Data {
				case "html":
					if a["lang"] == "" {
						t.Errorf("%s: <html> without lang", name)
					}
				case "h1":
					h1++
				case "fieldset":
					fieldsets++
					inFieldset = true
				case "legend":
					legends++
				case "label":
					labels[a["for"]] = true
				case "script":
					t.Errorf("%s: has a script", name)
				case "input", "select", "textarea":
					if a["type"] != "hidden" {
						controls = append(controls, a["id"])
						if a["type"] == "radio" && !inFieldset {
							t.Errorf("%s: radio %s outside a fieldset", name, a["id"])
						}
					}
				}
				for _, k := range []string{"aria-describedby", "aria-labelledby"} {
					refs = append(refs, strings.Fields(a[k])...)
				}
				if href := a["href"]; strings.HasPrefix(href, "#") {
					refs = append(refs, href[1:])
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c, inFieldset)
			}
		}
		walk(doc, false)
		if h1 != 1 {
			t.Errorf("%s: %d h1 headings", name, h1)
		}
		if fieldsets != legends {
			t.Errorf("%s: %d fieldsets, %d legends", name, fieldsets, legends)
		}
		for _, c := range controls {
			if c == "" || !labels[c] {
				t.Errorf("%s: control %q has no label", name, c)
			}
		}
		for id, n := range ids {
			if n > 1 {
				t.Errorf("%s: id %q used %d times", name, id, n)
			}
		}
		for _, r := range refs {
			if ids[r] == 0 {
				t.Errorf("%s: reference to missing id %q", name, r)
			}
		}
	}
}

func attrs(n *html.Node) map[string]string {
	m := map[string]string{}
	for _, a := range n.Attr {
		m[a.Key] = a.Val
	}
	return m
}

func TestAuthFromEnv(t *testing.T) {
	l := config.FromMap(map[string]string{"OPTOUT_ADMIN_TOKEN": "short"})
	page.AuthFromEnv(l)
	if err := l.Err(); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("a short token: err %v (must be refused without echoing it)", err)
	}
	l = config.FromMap(map[string]string{})
	if a := page.AuthFromEnv(l); l.Err() != nil || a.Configured() {
		t.Fatalf("no credentials must be valid (the page is then off): %+v, %v", a, l.Err())
	}
	l = config.FromMap(map[string]string{"OPTOUT_ADMIN_USERS_FILE": "/nonexistent/users"})
	page.AuthFromEnv(l)
	if l.Err() == nil {
		t.Fatal("a missing users file was accepted")
	}
}

// "Run now" asks the reconciler (over its real control subject) for a run
// of the tenant, as the admin, and shows the run started; a refusal says
// why. It is offered only while sync is on.
func TestRunNowAsksTheReconcilerForARun(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t)
	var by []string
	var mu sync.Mutex
	refuse := false
	u := newUI(t, func(d *page.Deps) {
		d.Reconcile = func(ctx context.Context, tn string, req runs.ControlRequest) (runs.ControlReply, error) {
			return runs.Request(ctx, nc, d.Status.Topology, tn, req)
		}
	})
	sub, err := nc.Subscribe(u.p.Topology.ControlSubject(runs.ControlVerb, "acme"), func(m *nats.Msg) {
		var req runs.ControlRequest
		_ = json.Unmarshal(m.Data, &req)
		mu.Lock()
		by = append(by, req.By)
		rep := runs.ControlReply{Tenant: "acme", Accepted: !refuse, RunID: "20260310T160000000Z-abcdef"}
		if refuse {
			rep = runs.ControlReply{Tenant: "acme", Code: runs.CodeBusy, Error: "run 20260310T160000000Z-abcdef of tenant acme is in progress"}
		}
		mu.Unlock()
		data, _ := json.Marshal(rep)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	if body := u.get("/admin/tenants/acme"); strings.Contains(body, "Run now") {
		t.Error("Run now is offered while sync is off")
	}
	if _, _, err := u.store.Update(u.ctx, "acme", func(s *tenant.Settings) error { s.SyncEnabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	body := u.get("/admin/tenants/acme")
	if !strings.Contains(body, "Run now") {
		t.Fatal("Run now is not offered with sync on")
	}
	v := url.Values{"csrf": {formValues(t, body).Get("csrf")}}
	code, h, out := u.do("POST", "/admin/tenants/acme/reconcile", v, nil)
	if code != http.StatusSeeOther || h.Get("Location") != "/admin/tenants/acme?run=20260310T160000000Z-abcdef#nightly-runs" {
		t.Fatalf("run now: %d %v\n%s", code, h, out)
	}
	if after := u.get("/admin/tenants/acme?run=20260310T160000000Z-abcdef"); !strings.Contains(after, "Run 20260310T160000000Z-abcdef started") {
		t.Error("the page does not say the run started")
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	code, _, out = u.do("POST", "/admin/tenants/acme/reconcile", v, nil)
	if code != http.StatusConflict || !strings.Contains(out, "is in progress") {
		t.Errorf("refused run now: %d\n%s", code, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(by) != 2 || by[0] != "admin-page:alice" {
		t.Errorf("requests by %v; want two by admin-page:alice", by)
	}
	// Without the form token nothing is asked.
	if code, _, _ := u.do("POST", "/admin/tenants/acme/reconcile", url.Values{}, nil); code != http.StatusForbidden {
		t.Errorf("run now without the form token: %d; want 403", code)
	}
}
