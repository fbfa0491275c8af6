package salesforce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// Client talks to one Salesforce org. It is safe for concurrent use.
type Client struct {
	s      *settings
	http   *http.Client
	tokens *tokenCache
	tel    *telemetry

	calls atomic.Int64
	usage atomic.Pointer[APIUsage]
}

// New validates cfg and builds a Client. It reads the JWT key but does not
// contact Salesforce: the first call fetches the token, so a tenant with bad
// credentials still gets a Client whose calls fail with a classified error.
func New(_ context.Context, cfg Config) (*Client, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	hc := instrument(s.baseClient, s)
	tel, err := newTelemetry(s.meter)
	if err != nil {
		return nil, fmt.Errorf("salesforce metrics: %w", err)
	}
	c := &Client{s: s, http: hc, tel: tel}
	c.tokens = &tokenCache{fetch: newTokenFetcher(s, hc), s: s}
	return c, nil
}

// APIVersion is the version in use, e.g. "v62.0".
func (c *Client) APIVersion() string { return c.s.apiVersion }

// APICalls counts the REST/Bulk requests this client sent (each attempt,
// including ones answered with an error), not token requests.
func (c *Client) APICalls() int64 { return c.calls.Load() }

// TokenFetches counts token requests (first token plus refreshes).
func (c *Client) TokenFetches() int64 { return c.tokens.fetches.Load() }

// InstanceURL returns the instance URL of the current token, fetching a token
// if none is held.
func (c *Client) InstanceURL(ctx context.Context) (string, error) {
	sess, err := c.tokens.get(ctx)
	if err != nil {
		return "", err
	}
	return sess.instanceURL, nil
}

// call describes one API request.
type call struct {
	op     string // for errors: "update opt-out"
	method string
	// route is the path template below /services/data/vNN.0 used to name
	// the span ("/composite/sobjects", "/sobjects/Contact/{id}").
	route string
	// path is the real path below /services/data/vNN.0, already escaped;
	// absPath (an instance-relative URL Salesforce handed out, such as
	// nextRecordsUrl) replaces it when set.
	path     string
	absPath  string
	rawQuery string
	body     []byte
	ctype    string
	accept   string
	header   http.Header
	// recordScope marks a request about one record (PATCH /sobjects/T/id).
	// Any other request is about no single record, so a per-record verdict
	// (NOT_FOUND on an endpoint, say) is the tenant's problem: such a message
	// must be kept, not dead-lettered.
	recordScope bool
}

func (c *Client) dataBase(sess *session) string {
	return sess.instanceURL + "/services/data/" + c.s.apiVersion
}

// resolve joins an instance-relative path from Salesforce (nextRecordsUrl)
// with the instance URL, a bare origin; an absolute URL is kept.
func resolve(instanceURL, p string) string {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		return p
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return instanceURL + p
}

// send performs cl and returns a 2xx response whose body the caller must
// close. Any other answer becomes an *Error. On a 401 the token is fetched
// once more and the request repeated once (a 401 means nothing was applied).
func (c *Client) send(ctx context.Context, cl *call) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		sess, err := c.tokens.get(ctx)
		if err != nil {
			return nil, withOp(cl.op, err)
		}
		base := c.dataBase(sess)
		target := base + cl.path
		if cl.absPath != "" {
			target = resolve(sess.instanceURL, cl.absPath)
			// The bearer token goes only to the instance it was issued for.
			if !strings.HasPrefix(target, sess.instanceURL+"/") {
				return nil, unsafeEndpoint(cl.op, "Salesforce handed out a URL on another host than the instance; not followed")
			}
		}
		if cl.rawQuery != "" {
			target += "?" + cl.rawQuery
		}
		safe, err := url.Parse(base + cl.route)
		if err != nil {
			return nil, &Error{Op: cl.op, Code: CodeInvalidArgument, Message: "bad route", Class: PermanentTenant}
		}
		var body io.Reader
		if cl.body != nil {
			body = bytes.NewReader(cl.body)
		}
		name := cl.method + " " + cl.route
		req, err := http.NewRequestWithContext(withSpanInfo(ctx, name, safe), cl.method, target, body)
		if err != nil {
			return nil, &Error{Op: cl.op, Code: CodeInvalidArgument, Message: "cannot build request", Class: PermanentTenant}
		}
		for k, v := range cl.header {
			req.Header[k] = v
		}
		req.Header.Set("Authorization", "Bearer "+sess.token.AccessToken)
		req.Header.Set("Sforce-Call-Options", "client="+c.s.callClient)
		accept := cl.accept
		if accept == "" {
			accept = "application/json"
		}
		req.Header.Set("Accept", accept)
		if cl.body != nil {
			ct := cl.ctype
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
		}

		resp, err := c.http.Do(req)
		c.calls.Add(1)
		c.tel.countCall(ctx, c.orgLabel(sess), name)
		if err != nil {
			return nil, transportError(ctx, cl.op, err)
		}
		c.observeLimitInfo(ctx, sess, resp.Header.Get("Sforce-Limit-Info"))
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, nil
		}
		e := errorFromResponse(cl.op, resp, cl.recordScope)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && refreshHelps(e) {
			c.tokens.invalidate(sess)
			continue
		}
		return nil, e
	}
}

// refreshHelps says whether a 401 is about the token itself. Not for a token
// that lacks the api scope (jsforce does not refresh on that either) nor for
// a malformed Authorization header: a new token would be refused the same way.
func refreshHelps(e *Error) bool {
	switch e.Code {
	case "INVALID_SESSION_ID":
		return e.Class == Auth
	case "INVALID_AUTH_HEADER":
		return strings.Contains(e.Message, "INVALID_JWT_FORMAT") // expired JWT-format token
	}
	return false
}

// doJSON sends cl and decodes a JSON answer into out (nil: discard).
func (c *Client) doJSON(ctx context.Context, cl *call, out any) error {
	resp, err := c.send(ctx, cl)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return transportError(ctx, cl.op, err)
		}
		return &Error{Op: cl.op, Status: resp.StatusCode, Code: CodeNonJSON, Message: "cannot decode response", Class: Retryable, Err: err}
	}
	return nil
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("salesforce: marshal request: %v", err)) // only plain types are marshalled
	}
	return b
}

// transportError classifies a failure without an HTTP answer. The *url.Error
// from http.Client names the full URL (record ids, SOQL), so only its cause
// is kept.
func transportError(ctx context.Context, op string, err error) *Error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &Error{Op: op, Code: CodeTransport, Message: ctxErr.Error(), Class: Classify(0, CodeTransport, ""), Err: ctxErr}
	}
	var ee *endpointError
	if errors.As(err, &ee) {
		return unsafeEndpoint(op, ee.msg)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &Error{Op: op, Code: CodeTransport, Message: err.Error(), Class: Classify(0, CodeTransport, ""), Err: err}
}

// withOp re-labels an *Error from the token step with the operation that
// needed the token, keeping its class.
func withOp(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		cp := *e
		cp.Op = op + ": " + e.Op
		return &cp
	}
	return fmt.Errorf("%s: %w", op, err)
}
