package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Sandbox serves every configured org plus the control API.
type Sandbox struct {
	orgs  map[string]*Org
	names []string
	now   func() time.Time
	onCal func(org string, c Call)
}

// New builds a sandbox from its configuration, applying defaults.
func New(cfg Config) (*Sandbox, error) {
	s := &Sandbox{orgs: map[string]*Org{}, now: cfg.Now, onCal: cfg.OnCall}
	if s.now == nil {
		s.now = time.Now
	}
	for _, oc := range cfg.Orgs {
		if err := oc.applyDefaults(); err != nil {
			return nil, fmt.Errorf("sandbox config: %w", err)
		}
		if _, dup := s.orgs[oc.Name]; dup {
			return nil, fmt.Errorf("sandbox config: org %q listed twice", oc.Name)
		}
		o, err := newOrg(s, oc)
		if err != nil {
			return nil, fmt.Errorf("sandbox config: org %q: %w", oc.Name, err)
		}
		s.orgs[oc.Name] = o
		s.names = append(s.names, oc.Name)
	}
	sort.Strings(s.names)
	return s, nil
}

// Org returns the named org, nil when unknown.
func (s *Sandbox) Org(name string) *Org { return s.orgs[name] }

// OrgNames lists the orgs, sorted.
func (s *Sandbox) OrgNames() []string { return append([]string(nil), s.names...) }

// ServeHTTP serves the control API (/_sandbox/) and the login-host token
// endpoint. Orgs are not served here: each has its own origin (OrgHandler),
// as each real org has its own My Domain.
func (s *Sandbox) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &holdWriter{ResponseWriter: rw}
	defer w.release()
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/_sandbox/") || p == "/_sandbox":
		s.serveControl(w, r)
		return
	case p == "/services/oauth2/token":
		// The login.salesforce.com stand-in: finds the org by client id.
		s.serveToken(w, r, nil)
		return
	}
	writeError(w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
}

// OrgHandler serves the named org at the root of its own origin
// (/services/oauth2/token, /services/data/...); nil when the org is unknown.
// Serve it on its own listener and tell the org its URL with SetURL.
func (s *Sandbox) OrgHandler(name string) http.Handler {
	o := s.orgs[name]
	if o == nil {
		return nil
	}
	return orgHandler{o}
}

type orgHandler struct{ o *Org }

// onOrigin marks requests that reached an org on its own origin, so their
// Host names the org; the login host and the control API cannot know it.
type onOrigin struct{}

func (h orgHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &holdWriter{ResponseWriter: rw}
	defer w.release()
	h.o.serve(w, r.WithContext(context.WithValue(r.Context(), onOrigin{}, true)), r.URL.Path)
}

// holdWriter keeps the last write back until the handler has returned, so
// a call is in the call log before its client can read the whole answer
// (otherwise a test reading Calls() right after a call races the handler's
// deferred log). Streamed answers only hold their last chunk.
type holdWriter struct {
	http.ResponseWriter
	pending []byte
}

func (h *holdWriter) Write(b []byte) (int, error) {
	if err := h.release(); err != nil {
		return 0, err
	}
	h.pending = append(h.pending[:0], b...)
	return len(b), nil
}

func (h *holdWriter) release() error {
	if len(h.pending) == 0 {
		return nil
	}
	_, err := h.ResponseWriter.Write(h.pending)
	h.pending = h.pending[:0]
	return err
}

func (h *holdWriter) Flush() {
	_ = h.release()
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *holdWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// Hijack drops what is held: a hijacked answer is discarded anyway.
func (h *holdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.pending = nil
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// SetURL records the org's origin (scheme://host:port, no path) for the
// answers given off that origin: login-host tokens and the control API.
func (o *Org) SetURL(origin string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.origin = strings.TrimSuffix(origin, "/")
}

// URL is the origin given to SetURL ("" before).
func (o *Org) URL() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.origin
}

// baseURL is the org's My Domain and instance URL as the client sees it: a
// bare origin, as Salesforce's instance_url is. On the org's own origin it
// comes from the request (so it holds behind httptest and port-forwards).
func (o *Org) baseURL(r *http.Request) string {
	if r.Context().Value(onOrigin{}) == nil {
		return o.URL()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if fp := r.Header.Get("X-Forwarded-Proto"); fp != "" {
		scheme = fp
	}
	return scheme + "://" + r.Host
}

func (o *Org) serve(w http.ResponseWriter, r *http.Request, path string) {
	switch {
	case path == "/services/oauth2/token":
		o.sb.serveToken(w, r, o)
	case path == "/services/data" || path == "/services/data/":
		o.serveVersions(w, r)
	case strings.HasPrefix(path, "/services/data/v"):
		o.serveData(w, r, path[len("/services/data/"):])
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", msgNotFound, nil)
	}
}

var releaseLabels = map[string]string{
	"62.0": "Winter '25", "63.0": "Spring '25", "64.0": "Summer '25", "65.0": "Winter '26",
	"66.0": "Spring '26", "67.0": "Summer '26", "68.0": "Winter '27",
}

// serveVersions answers GET /services/data/ without auth and without Sforce-Limit-Info.
func (o *Org) serveVersions(w http.ResponseWriter, r *http.Request) {
	call := Call{Route: RouteVersions, Method: r.Method, Path: r.URL.Path, AutoAssign: r.Header.Get("Sforce-Auto-Assign"), Client: callClient(r)}
	rec := &recorder{ResponseWriter: w}
	defer func() { call.Status = rec.status; o.logCall(call) }()
	if r.Method != http.MethodGet {
		methodNotAllowed(rec, r, "GET")
		return
	}
	if f := o.matchFault(RouteVersions, nil); f != nil && o.applyCallFault(rec, r, f, &call, nil) {
		return
	}
	type version struct {
		Label   string `json:"label"`
		URL     string `json:"url"`
		Version string `json:"version"`
	}
	out := []version{}
	for _, v := range o.cfg.APIVersions {
		label := releaseLabels[v]
		if label == "" {
			label = "v" + v
		}
		out = append(out, version{Label: label, URL: "/services/data/v" + v, Version: v})
	}
	writeJSON(rec, http.StatusOK, out)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed string) {
	w.Header().Set("Allow", allowed)
	writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
		fmt.Sprintf("HTTP Method '%s' not allowed. Allowed are %s", r.Method, allowed), nil)
}

// callClient extracts client=... from Sforce-Call-Options.
func callClient(r *http.Request) string {
	for _, part := range strings.Split(r.Header.Get("Sforce-Call-Options"), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(k, "client") {
			return v
		}
	}
	return ""
}
