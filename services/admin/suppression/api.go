package suppression

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// Pattern is where the API is mounted on the admin port.
const Pattern = "GET /v1/tenants/{tenant}/suppression"

// Config of the API.
type Config struct {
	// TokensFile holds "tenant:token" lines; unset, the API answers 503.
	TokensFile string
	// MaxLag is how far behind the ledger the index may be and still
	// answer "allowed".
	MaxLag time.Duration
}

// ConfigFromEnv reads OPTOUT_SUPPRESSION_TOKENS_FILE and OPTOUT_SUPPRESSION_MAX_LAG.
func ConfigFromEnv(l *config.Loader) Config {
	return Config{
		TokensFile: l.File("OPTOUT_SUPPRESSION_TOKENS_FILE", "file of tenant:token lines (a mounted Secret; tokens of at least 16 characters, several per tenant allowed) for the suppression API GET /v1/tenants/{tenant}/suppression on the admin port: a token answers for its own tenant only. Re-read when it changes. Unset: the API answers 503 and the service keeps no index of the ledger (when set, about 0.25 KiB of memory an entry, twice that during the start-up read: bench/suppression.md)"),
		MaxLag:     l.Duration("OPTOUT_SUPPRESSION_MAX_LAG", 5*time.Second, 500*time.Millisecond, time.Hour, "how far behind the ledger the suppression API's in-memory index may be and still answer allowed; further behind, a person it does not find suppressed is answered 503 unknown"),
	}
}

// API serves the suppression lookups from an Index it keeps up to date.
type API struct {
	cfg     Config
	idx     *Index
	tokens  *tokenFile
	log     zerolog.Logger
	metrics *metrics
	started time.Time
	// HashKeyed reports whether the email-hash key of the install is
	// configured: without it an address hashes to nothing the ledger holds.
	HashKeyed func() bool
}

// New returns the API over an empty index; the ledger feed fills it
// (when Enabled).
func New(cfg Config, log zerolog.Logger) *API {
	a := &API{cfg: cfg, idx: NewIndex(), log: log, HashKeyed: logx.EmailHashKeyed, started: time.Now()}
	if cfg.TokensFile != "" {
		a.tokens = &tokenFile{path: cfg.TokensFile}
	}
	return a
}

// Index is the API's index.
func (a *API) Index() *Index { return a.idx }

// Enabled reports whether the API is configured (a tokens file): only then
// is an index kept, fed by the admin service's ledger feed
// (services/admin/ledgerfeed). The index costs memory in proportion to the
// ledger (bench/suppression.md), which an admin service serving only the
// page should not pay.
func (a *API) Enabled() bool { return a.tokens != nil }

// Answer is the API's answer (openapi.yaml, SuppressionAnswer).
type Answer struct {
	Tenant   string    `json:"tenant"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since,omitzero"`
	MatchBy  string    `json:"matchedBy"`
	Records  []Record  `json:"records"`
	AsOf     time.Time `json:"asOf,omitzero"`
	Complete bool      `json:"complete"`
}

// Results.
const (
	Allowed    = "allowed"
	Suppressed = "suppressed"
	Unknown    = "unknown"
)

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// timed adds a Server-Timing header as the status is written.
type timed struct {
	http.ResponseWriter
	start time.Time
}

func (t *timed) WriteHeader(code int) {
	t.Header().Set("Server-Timing", fmt.Sprintf("app;dur=%.3f", float64(time.Since(t.start).Nanoseconds())/1e6))
	t.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

// ServeHTTP answers GET /v1/tenants/{tenant}/suppression. Nothing of a
// request is logged: the query holds an address.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Server-Timing says how long the answer took the handler itself, so a
	// client (bench/suppression) can tell it from the network and queueing.
	start := time.Now()
	w = &timed{ResponseWriter: w, start: start}
	if a.tokens == nil {
		a.count("", "not_configured")
		fail(w, http.StatusServiceUnavailable, "not_configured", "the suppression API has no tokens: set OPTOUT_SUPPRESSION_TOKENS_FILE to a file of tenant:token lines")
		return
	}
	toks, err := a.tokens.load()
	if err != nil {
		a.log.Error().Err(err).Msg("suppression API: tokens unreadable")
		a.count("", "not_configured")
		fail(w, http.StatusServiceUnavailable, "not_configured", "the suppression API's tokens file is unreadable or invalid; the admin service's log says why")
		return
	}
	bearer, ok := cutPrefixFold(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(bearer) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="optout-sync suppression"`)
		a.count("", "unauthorized")
		fail(w, http.StatusUnauthorized, "unauthorized", "send the tenant's API token as Authorization: Bearer <token>")
		return
	}
	scope, ok := toks.tenantOf(strings.TrimSpace(bearer))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="optout-sync suppression", error="invalid_token"`)
		a.count("", "unauthorized")
		fail(w, http.StatusUnauthorized, "unauthorized", "the token is not valid")
		return
	}
	tenant := r.PathValue("tenant")
	if tenant != scope {
		// Counted under the token's tenant: the path's is whatever the
		// caller typed, and a label must not grow with that.
		a.count(scope, "forbidden")
		fail(w, http.StatusForbidden, "forbidden", "the token is not valid for tenant "+quote(tenant))
		return
	}
	kind, value, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		a.count(tenant, "bad_request")
		fail(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if kind == ByEmail {
		if a.HashKeyed != nil && !a.HashKeyed() {
			a.count(tenant, "not_configured")
			fail(w, http.StatusServiceUnavailable, "not_configured", "email lookups need the install's email-hash key: set OPTOUT_EMAIL_HASH_KEY_FILE on the admin service, the same Secret the pusher has")
			return
		}
		value = logx.HashEmail(value)
	}
	status, ans := a.answer(tenant, kind, value)
	a.count(tenant, ans.Result)
	writeJSON(w, status, ans)
}

// answer looks value up and decides; it returns the status to answer with.
func (a *API) answer(tenant, kind, value string) (int, Answer) {
	asOf := a.idx.AsOf()
	ans := Answer{Tenant: tenant, MatchBy: kind, AsOf: asOf, Records: a.idx.Lookup(tenant, kind, value)}
	ans.Complete = !asOf.IsZero() && time.Since(asOf) <= a.cfg.MaxLag
	var first *Record
	for i := range ans.Records {
		rec := &ans.Records[i]
		if rec.Suppressed && (first == nil || rec.Since.Before(first.Since)) {
			first = rec
		}
	}
	switch {
	case first != nil:
		// Answered even from an index that lags: a person found suppressed
		// is told suppressed, the safe direction.
		ans.Result, ans.Since = Suppressed, first.Since
		ans.Reason = "opted out"
		if first.Source != "" {
			ans.Reason += " (source " + first.Source + ")"
		}
		if first.Reason != "" {
			ans.Reason += ": " + first.Reason
		}
		return http.StatusOK, ans
	case asOf.IsZero():
		ans.Result = Unknown
		ans.Reason = fmt.Sprintf("the suppression index is still reading the ledger (%d persons so far); ask again shortly", a.idx.Size())
		return http.StatusServiceUnavailable, ans
	case !ans.Complete:
		ans.Result = Unknown
		ans.Reason = fmt.Sprintf("the suppression index is %s behind the ledger (limit %s): a recent opt-out may be missing; ask again shortly",
			time.Since(asOf).Round(time.Millisecond), a.cfg.MaxLag)
		return http.StatusServiceUnavailable, ans
	case len(ans.Records) == 0:
		ans.Result, ans.Reason = Allowed, "no opt-out recorded"
	default:
		ans.Result, ans.Reason = Allowed, "no opt-out in force: the person resubscribed"
	}
	return http.StatusOK, ans
}

// parseQuery checks the query: exactly one of email, salesConnectId and
// salesforceId, once, well-formed, and nothing else. It returns the lookup
// kind and the value normalised (an 18-character Salesforce id).
func parseQuery(raw string) (kind, value string, err error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", "", errors.New("the query string is malformed: " + err.Error())
	}
	for k := range q {
		if k != ByEmail && k != BySalesConnectID && k != BySalesforceID {
			return "", "", fmt.Errorf("unknown query parameter %s: give exactly one of email, salesConnectId or salesforceId", quote(k))
		}
	}
	var given []string
	for _, k := range []string{ByEmail, BySalesConnectID, BySalesforceID} {
		if vs, ok := q[k]; ok {
			if len(vs) > 1 {
				return "", "", fmt.Errorf("%s is given %d times: give it once", k, len(vs))
			}
			given = append(given, k)
		}
	}
	switch len(given) {
	case 0:
		return "", "", errors.New("no lookup given: give exactly one of email, salesConnectId or salesforceId")
	case 1:
	default:
		return "", "", fmt.Errorf("%s are given together: give exactly one of email, salesConnectId or salesforceId", strings.Join(given, " and "))
	}
	kind, value = given[0], q.Get(given[0])
	switch kind {
	case ByEmail:
		if err := checkEmail(value); err != nil {
			return "", "", err
		}
	case BySalesConnectID:
		if value == "" || len(value) > 256 || strings.IndexFunc(value, unicode.IsControl) >= 0 {
			return "", "", errors.New("salesConnectId must be 1-256 characters without control characters")
		}
	case BySalesforceID:
		id, err := sfid.Normalize(value)
		if err != nil {
			return "", "", fmt.Errorf("salesforceId is malformed: %s", strings.TrimPrefix(err.Error(), "salesforce id "))
		}
		if sfid.ObjectType(id) == "" {
			return "", "", fmt.Errorf("salesforceId %s is not a Contact (prefix %s) or a Lead (prefix %s)", quote(value), sfid.PrefixContact, sfid.PrefixLead)
		}
		value = id
	}
	return kind, value, nil
}

// checkEmail accepts a bare address (no display name, no angle brackets).
// The message never repeats the address.
func checkEmail(v string) error {
	if v == "" {
		return errors.New("email is empty")
	}
	if len(v) > 254 {
		return errors.New("email is longer than 254 characters")
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return errors.New("email is not an address of the form name@domain")
	}
	return nil
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
