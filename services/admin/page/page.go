// Package page is the admin settings page the admin service serves: per
// tenant, the "Sync with Salesforce" switch, the opt-out field choice, the nightly schedule and
// conflict policy, a live check of the Salesforce prerequisites with what to
// do when one fails, the backlog and dead letters, and extra panels (the
// nightly runs, once the reconciler provides them).
//
// It is plain server-rendered HTML (html/template, no JavaScript, no build
// step): the form posts and redirects. Mount New(...) under its Prefix on an
// internal admin port:
//
//	admin.Handle("/admin/", page.New(page.Deps{...}))
//
// Routes (Prefix "/admin"):
//
//	GET  /admin/                  the tenants
//	GET  /admin/tenants/{tenant}          one tenant's settings page
//	POST /admin/tenants/{tenant}          save (303 to ?saved=1; 422 invalid; 409 changed meanwhile; 403 CSRF)
//	POST /admin/tenants/{tenant}/recheck  fresh live check (303 back to the page; 403 CSRF)
//	GET  /admin/tenants/{tenant}/person?id=…[&by=auto|sc|sf|email][&format=csv|json]
//	POST /admin/tenants/{tenant}/person   the same from the search form (an address stays out of URLs)
//	                                      a person's proof: every change with when, source, reason,
//	                                      trace and the value Salesforce confirmed (or its download)
//	POST /admin/tenants/{tenant}/dead-letters/retry  replay the dead letters of one cause (303 back; 403 CSRF)
//	GET  /admin/tenants/{tenant}/compliance?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv|json]
//	                                      each opt-out received in the range and its time to honour

//	POST /admin/tenants/{tenant}/reconcile  run the nightly sync now (303 to ?run=<id>; 409 refused; 403 CSRF)
//	GET  /admin/style.css
//
// Every request, reads included, needs credentials (AuthFromEnv): HTTP basic
// auth from OPTOUT_ADMIN_USERS_FILE ("name:password" lines) or a bearer token
// from OPTOUT_ADMIN_TOKEN_FILE (or OPTOUT_ADMIN_TOKEN); files are re-read when
// the Secret rotates. Without any, the page answers 503 and says how to set it
// up. Posts must come from the page: Go's CrossOriginProtection plus an HMAC
// form token keyed by the Secret.
package page

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Deps wire the page.
type Deps struct {
	// Status reads tenants; its Settings store is also where the form saves.
	// Its Salesforce clients run the live check (nil: no check is shown).
	Status *tenantstatus.Inspector
	Auth   Auth
	// Panels are extra sections of a tenant's page, in order.
	Panels []Panel
	Log    zerolog.Logger
	// Prefix is the path the page is mounted under (default "/admin").
	Prefix string
	// Proof reads people's trails for the proof and compliance pages (nil:
	// those pages answer 404).
	Proof *proof.Source
	// DLQ lists a tenant's dead letters by cause, with what fixes each and
	// a "Retry these" button (nil: only their count is shown).
	DLQ *deadletter.DLQ

	// Reconcile, when set, asks the nightly reconciler to run a tenant now
	// (runs.Request on its control subject): the page's "Run now".
	Reconcile func(ctx context.Context, tenant string, req runs.ControlRequest) (runs.ControlReply, error)
	// CheckTTL is how long a live Salesforce check is reused (default 1m):
	// each check costs the org a token request and two describe calls, and
	// "Check again" on the page forces a fresh one.
	CheckTTL time.Duration
}

type handler struct {
	d      Deps
	prefix string
	auth   *authenticator
	checks checkCache
}

// New returns the page's handler. It panics without Deps.Status, a wiring
// mistake to catch at start.
func New(d Deps) http.Handler {
	if d.Status == nil || d.Status.JS == nil || d.Status.Settings.KV == nil {
		panic("page: Deps.Status with JS and Settings is required")
	}
	if d.CheckTTL <= 0 {
		d.CheckTTL = time.Minute
	}
	h := &handler{d: d, prefix: strings.TrimSuffix(d.Prefix, "/"), auth: &authenticator{auth: d.Auth}}
	if h.prefix == "" {
		h.prefix = "/admin"
	}
	if !d.Auth.Configured() {
		d.Log.Warn().Msg("admin page has no credentials and refuses every request: set OPTOUT_ADMIN_USERS_FILE or OPTOUT_ADMIN_TOKEN_FILE")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+h.prefix+"/{$}", h.list)
	mux.HandleFunc("GET "+h.prefix+"/tenants/{tenant}", h.show)
	mux.HandleFunc("POST "+h.prefix+"/tenants/{tenant}", h.save)
	mux.HandleFunc("POST "+h.prefix+"/tenants/{tenant}/recheck", h.recheck)
	if d.Proof != nil {
		mux.HandleFunc("GET "+h.prefix+"/tenants/{tenant}/person", h.person)
		mux.HandleFunc("POST "+h.prefix+"/tenants/{tenant}/person", h.person)
		mux.HandleFunc("GET "+h.prefix+"/tenants/{tenant}/compliance", h.compliance)
	}
	if d.DLQ != nil {
		mux.HandleFunc("POST "+h.prefix+"/tenants/{tenant}/dead-letters/retry", h.retryDeadLetters)
	}

	mux.HandleFunc("POST "+h.prefix+"/tenants/{tenant}/reconcile", h.reconcile)
	mux.HandleFunc("GET "+h.prefix+"/style.css", serveCSS)
	var out http.Handler = mux
	out = http.NewCrossOriginProtection().Handler(out)
	out = h.authenticate(out)
	return secure(out)
}

// secure sets headers every answer needs: no scripts, no framing, no caching
// of pages that show tenants' setup.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

type session struct {
	actor string
	creds *credentials
}

func sessionOf(ctx context.Context) session {
	s, _ := ctx.Value(ctxKey{}).(session)
	return s
}

func (h *handler) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		creds, err := h.auth.load()
		if err != nil {
			if !errors.Is(err, errNotConfigured) {
				h.d.Log.Error().Err(err).Msg("admin page credentials unreadable")
			}
			h.message(w, http.StatusServiceUnavailable, "Admin page unavailable",
				"The admin page cannot check who you are: "+err.Error()+". An operator must fix the admin Secret.")
			return
		}
		actor, ok := creds.authenticate(r)
		if !ok {
			if r.Header.Get("Authorization") != "" {
				h.d.Log.Warn().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Msg("admin page: wrong credentials")
				time.Sleep(failedAuthDelay)
			}
			if len(creds.users) > 0 {
				w.Header().Add("WWW-Authenticate", `Basic realm="optout-sync admin", charset="UTF-8"`)
			}
			if creds.token != "" {
				w.Header().Add("WWW-Authenticate", `Bearer realm="optout-sync admin"`)
			}
			h.message(w, http.StatusUnauthorized, "Sign-in required", "Sign in with your admin user name and password.")
			return
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, session{actor: actor, creds: creds})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// list is the tenants overview.
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	sums, err := h.d.Status.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, http.StatusOK, pages.list, listPage{layout: h.layout(r, "Tenants"), Tenants: sums})
}

// show is one tenant's settings page.
func (h *handler) show(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	// A GET never forces a live check: a fresh check spends the org's API
	// calls, and a GET can be triggered from any site (an <img> is enough).
	p, err := h.page(r, t, false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p.Saved = r.URL.Query().Get("saved") == "1"
	h.render(w, http.StatusOK, pages.tenant, p)
}

// recheck forces a fresh live check of the tenant's Salesforce setup. It is
// a POST with the page's form token because each check costs the org a token
// request and describe calls; the result lands in the check cache and the
// redirect (303, so a reload does not post again) shows it.
func (h *handler) recheck(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	if !h.formTokenValid(w, r, t) {
		return
	}
	if _, err := h.page(r, t, true); err != nil {
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, h.prefix+"/tenants/"+t+"#prereq-h", http.StatusSeeOther)
}

// tenant is the request's tenant id; when it is not a valid one it has
// answered the request (404).
func (h *handler) tenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	t := r.PathValue("tenant")
	if !event.ValidTenant(t) {
		h.message(w, http.StatusNotFound, "No such tenant", "A tenant id has 1-64 characters of A-Z, a-z, 0-9, _ and -.")
		return "", false
	}
	return t, true
}

// reconcile asks the reconciler to run the tenant now (the first run after
// sync is turned on is otherwise the next slot), then shows the page with
// the run in progress.
func (h *handler) reconcile(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	if h.d.Reconcile == nil {
		h.message(w, http.StatusNotFound, "Not available", "This page cannot start runs of the nightly sync.")
		return
	}
	if !h.formTokenValid(w, r, t) {
		return
	}
	actor := sessionOf(r.Context()).actor
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rep, err := h.d.Reconcile(ctx, t, runs.ControlRequest{By: "admin-page:" + actor})
	if err != nil {
		h.d.Log.Warn().Err(err).Str("tenant", t).Msg("run-now request failed")
		h.message(w, http.StatusServiceUnavailable, "No run started",
			"The nightly reconciler did not answer; check that it is running, then try again.")
		return
	}
	if !rep.Accepted {
		h.message(w, http.StatusConflict, "No run started", "The reconciler refused to start a run now: "+rep.Error+".")
		return
	}
	h.d.Log.Info().Str("tenant", t).Str("actor", actor).Str("run_id", rep.RunID).Msg("nightly sync run started from the page")
	http.Redirect(w, r, h.prefix+"/tenants/"+t+"?run="+rep.RunID+"#nightly-runs", http.StatusSeeOther)
}

// formTokenValid reads a posted form and checks its CSRF token; when either
// fails it has answered the request.
func (h *handler) formTokenValid(w http.ResponseWriter, r *http.Request, t string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		h.message(w, http.StatusBadRequest, "Form not understood", "The form could not be read. Reload the page and try again.")
		return false
	}
	sess := sessionOf(r.Context())
	if !csrfValid(sess.creds.csrfKey, r.PostForm.Get("csrf"), sess.actor, t, time.Now()) {
		h.message(w, http.StatusForbidden, "Form expired",
			"The form has expired or did not come from this page. Reload the page and try again.")
		return false
	}
	return true
}

// save stores the form. Invalid input re-renders the form with the
// problems (422); a concurrent change by someone else re-renders the stored
// values (409) instead of overwriting them; success redirects (303) so a
// reload never posts twice.
func (h *handler) save(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tenant(w, r)
	if !ok {
		return
	}
	if !h.formTokenValid(w, r, t) {
		return
	}
	sess := sessionOf(r.Context())
	f := formFrom(r.PostForm)
	s, errs := f.settings(t)
	if len(errs) > 0 {
		p, err := h.page(r, t, false)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		p.Form, p.Errors = f, errs
		h.render(w, http.StatusUnprocessableEntity, pages.tenant, p)
		return
	}
	ctx := r.Context()
	old, rev, err := h.d.Status.Settings.GetRevision(ctx, t)
	if err == nil && rev != f.Revision {
		err = tenant.ErrChanged
	}
	if err == nil {
		_, err = h.d.Status.Settings.PutIfRevision(ctx, s, rev)
	}
	if errors.Is(err, tenant.ErrChanged) {
		p, err := h.page(r, t, false)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		p.Conflict = true
		h.render(w, http.StatusConflict, pages.tenant, p)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.d.Log.Info().Str(logx.FieldTenant, t).Str("actor", sess.actor).
		Str("change", describeChange(old, s)).Str("writes_to", s.TargetField()).Msg("tenant settings changed on the admin page")
	http.Redirect(w, r, h.prefix+"/tenants/"+t+"?saved=1", http.StatusSeeOther)
}

// page gathers everything a tenant page shows.
func (h *handler) page(r *http.Request, t string, recheck bool) (tenantPage, error) {
	ctx := r.Context()
	st, err := h.d.Status.Inspect(ctx, t, tenantstatus.Options{})
	if err != nil {
		return tenantPage{}, err
	}
	sess := sessionOf(ctx)
	p := tenantPage{
		layout: h.layout(r, "Salesforce sync settings for "+t),
		Tenant: t,
		Status: st,
		Form:   formOf(st.Settings, st.Revision),
		CSRF:   csrfToken(sess.creds.csrfKey, sess.actor, t, time.Now()),
		Proof:  h.d.Proof != nil,
		RunNow: h.d.Reconcile != nil && st.Settings.SyncEnabled,
		RunID:  r.URL.Query().Get("run"),
	}
	if h.d.DLQ != nil {
		if p.DeadLetters, err = tenantstatus.GroupDeadLetters(ctx, *h.d.DLQ, t); err != nil {
			return tenantPage{}, err
		}
		p.Retry = retryResult(r.URL.Query())
	}
	if h.d.Status.Salesforce != nil {
		p.Check = h.checks.get(st.Settings, h.d.CheckTTL, recheck, func() *tenantstatus.Check {
			return h.d.Status.Check(ctx, t, st.Settings)
		})
	}
	for _, pn := range h.d.Panels {
		var buf bytes.Buffer
		pv := panelView{ID: pn.ID(), Heading: pn.Heading()}
		if err := pn.Render(ctx, &buf, t); err != nil {
			pv.Err = logx.Redact(err.Error())
		} else {
			// Panels are our own code rendering with html/template.
			pv.Body = template.HTML(buf.String())
		}
		p.Panels = append(p.Panels, pv)
	}
	return p, nil
}

func (h *handler) layout(r *http.Request, title string) layout {
	return layout{Title: title, Prefix: h.prefix, Actor: sessionOf(r.Context()).actor}
}

func (h *handler) render(w http.ResponseWriter, status int, t *template.Template, data any) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		h.d.Log.Error().Err(err).Msg("admin page template failed")
		http.Error(w, "The page could not be rendered; the error is in the admin service's log.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// message renders a page with one heading and one paragraph.
func (h *handler) message(w http.ResponseWriter, status int, title, text string) {
	h.render(w, status, pages.message, messagePage{layout: layout{Title: title, Prefix: h.prefix}, Text: text})
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.d.Log.Error().Err(err).Str("path", r.URL.Path).Msg("admin page failed")
	h.message(w, http.StatusInternalServerError, "Something went wrong",
		"The page could not be loaded: "+logx.Redact(err.Error())+". Try again; if it persists, check that NATS is reachable.")
}

func describeChange(old, s tenant.Settings) string {
	var parts []string
	add := func(name, a, b string) {
		if a != b {
			parts = append(parts, fmt.Sprintf("%s %s -> %s", name, a, b))
		}
	}
	add("sync", strconv.FormatBool(old.SyncEnabled), strconv.FormatBool(s.SyncEnabled))
	add("field", tenantstatus.FieldFlag(old.Field), tenantstatus.FieldFlag(s.Field))
	add("customField", old.CustomField, s.CustomField)
	add("scheduleTime", old.ScheduleTime, s.ScheduleTime)
	add("scheduleZone", old.ScheduleZone, s.ScheduleZone)
	add("conflictPolicy", old.ConflictPolicy, s.ConflictPolicy)
	add("cdc", strconv.FormatBool(old.CDCEnabled), strconv.FormatBool(s.CDCEnabled))
	add("cdcTopic", old.CDCTopic, s.CDCTopic)
	add("duplicatesByEmail", strconv.FormatBool(old.DuplicatesByEmail), strconv.FormatBool(s.DuplicatesByEmail))
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// checkCache keeps live checks for CheckTTL, keyed by the settings that
// change the result, so a save re-checks the new choice at once.
type checkCache struct {
	mu sync.Mutex
	m  map[string]cachedCheck
}

type cachedCheck struct {
	c  *tenantstatus.Check
	at time.Time
}

func (cc *checkCache) get(s tenant.Settings, ttl time.Duration, fresh bool, run func() *tenantstatus.Check) *tenantstatus.Check {
	key := strings.Join([]string{s.Tenant, string(s.Field), s.CustomField, strconv.FormatBool(s.SyncEnabled)}, "\x00")
	cc.mu.Lock()
	got, ok := cc.m[key]
	cc.mu.Unlock()
	if ok && !fresh && time.Since(got.at) < ttl {
		return got.c
	}
	c := run()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.m == nil {
		cc.m = map[string]cachedCheck{}
	}
	for k, v := range cc.m { // keep the map small
		if time.Since(v.at) >= ttl {
			delete(cc.m, k)
		}
	}
	cc.m[key] = cachedCheck{c: c, at: time.Now()}
	return c
}

//go:embed templates/*.html style.css
var assets embed.FS

func serveCSS(w http.ResponseWriter, _ *http.Request) {
	b, _ := assets.ReadFile("style.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	// The stylesheet holds nothing secret; let the browser keep it briefly.
	w.Header().Set("Cache-Control", "private, max-age=300")
	_, _ = w.Write(b)
}
