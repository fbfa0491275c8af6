package salesforce

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const opToken = "fetch token"

// JWTBearer is Salesforce's OAuth 2.0 JWT bearer flow: an RS256 assertion
// with iss = consumer key, sub = username, aud = login/test.salesforce.com,
// exp a few minutes ahead, posted to the token endpoint. Like
// clientcredentials.Config, every Token call fetches a new token; the
// Client caches it.
type JWTBearer struct {
	TokenURL   string // full token endpoint URL
	ClientID   string
	Username   string
	Audience   string
	Key        *rsa.PrivateKey
	Lifetime   time.Duration // exp - now; default 3 minutes
	HTTPClient *http.Client  // default http.DefaultClient
}

// TokenSource returns a non-caching oauth2.TokenSource bound to ctx.
func (j *JWTBearer) TokenSource(ctx context.Context) oauth2.TokenSource {
	return jwtSource{ctx: ctx, j: j}
}

type jwtSource struct {
	ctx context.Context
	j   *JWTBearer
}

func (s jwtSource) Token() (*oauth2.Token, error) { return s.j.Token(s.ctx) }

// Token signs a fresh assertion and exchanges it for an access token.
func (j *JWTBearer) Token(ctx context.Context) (*oauth2.Token, error) {
	life := j.Lifetime
	if life <= 0 {
		life = 3 * time.Minute
	}
	// MapClaims so that aud is a plain string, as Salesforce's samples send it.
	claims := jwt.MapClaims{
		"iss": j.ClientID,
		"sub": j.Username,
		"aud": j.Audience,
		"exp": time.Now().Add(life).Unix(),
	}
	assertion, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(j.Key)
	if err != nil {
		return nil, &Error{Op: opToken, Code: CodeInvalidArgument, Message: "sign JWT assertion", Class: PermanentTenant, Err: err}
	}
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("jwt bearer: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := j.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, transportError(ctx, opToken, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(opToken, resp, false)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, transportError(ctx, opToken, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, newError(opToken, resp.StatusCode, CodeNonJSON, "token response is not JSON")
	}
	access, _ := raw["access_token"].(string)
	if access == "" {
		return nil, newError(opToken, resp.StatusCode, CodeResultMismatch, "token response without access_token")
	}
	typ, _ := raw["token_type"].(string)
	return (&oauth2.Token{AccessToken: access, TokenType: typ}).WithExtra(raw), nil
}

// session is one access token with what came with it.
type session struct {
	token       *oauth2.Token
	instanceURL string // no trailing slash
	orgID       string
}

// tokenCache holds the current token. Salesforce sends no expires_in, so a
// token is good until a call answers 401; then invalidate drops it and the
// next get fetches a new one.
type tokenCache struct {
	fetch   func(ctx context.Context) (*oauth2.Token, error)
	s       *settings
	mu      sync.Mutex
	cur     *session
	fetches atomic.Int64
}

func (c *tokenCache) get(ctx context.Context) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		return c.cur, nil
	}
	c.fetches.Add(1)
	tok, err := c.fetch(ctx)
	if err != nil {
		return nil, tokenError(ctx, err)
	}
	s, err := newSession(tok, c.s)
	if err != nil {
		return nil, err
	}
	c.cur = s
	return s, nil
}

// invalidate forgets s if it is still current, so N concurrent 401s on the
// same token cause one fetch, not N.
func (c *tokenCache) invalidate(s *session) {
	c.mu.Lock()
	if c.cur == s {
		c.cur = nil
	}
	c.mu.Unlock()
}

// newSession refuses an instance_url the access token must not go to: the
// token is then dropped unused and the tenant is unhealthy until fixed.
func newSession(tok *oauth2.Token, st *settings) (*session, error) {
	inst, _ := tok.Extra("instance_url").(string)
	u, err := url.Parse(inst)
	if inst == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, newError(opToken, 0, CodeResultMismatch, "token response without a usable instance_url")
	}
	if msg := st.policy.checkInstance(u, st.myDomain); msg != "" {
		return nil, unsafeEndpoint(opToken, msg)
	}
	s := &session{token: tok, instanceURL: strings.TrimSuffix(inst, "/")}
	// id is https://login.salesforce.com/id/<orgId>/<userId>.
	if id, _ := tok.Extra("id").(string); id != "" {
		parts := strings.Split(strings.TrimSuffix(id, "/"), "/")
		if len(parts) >= 2 {
			s.orgID = parts[len(parts)-2]
		}
	}
	return s, nil
}

// tokenError turns whatever the oauth2 package returned into an *Error.
func tokenError(ctx context.Context, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		ct := ""
		if re.Response != nil {
			status = re.Response.StatusCode
			ct = re.Response.Header.Get("Content-Type")
		}
		if re.ErrorCode != "" {
			return newError(opToken, status, re.ErrorCode, truncate(re.ErrorDescription))
		}
		return parseErrorBody(opToken, status, ct, re.Body)
	}
	var ue *url.Error
	if errors.As(err, &ue) || ctx.Err() != nil {
		return transportError(ctx, opToken, err)
	}
	// e.g. "server response missing access_token".
	return &Error{Op: opToken, Code: CodeResultMismatch, Message: "unusable token response", Class: Retryable, Err: err}
}

// newTokenFetcher picks the flow. Token requests go through the traced client
// too, under the span name "POST /services/oauth2/token".
func newTokenFetcher(s *settings, hc *http.Client) func(ctx context.Context) (*oauth2.Token, error) {
	safe, _ := url.Parse(s.tokenURL)
	const name = "POST " + tokenPath
	if s.key != nil {
		j := &JWTBearer{TokenURL: s.tokenURL, ClientID: s.clientID, Username: s.username,
			Audience: s.audience, Key: s.key, Lifetime: s.jwtLifetime, HTTPClient: hc}
		return func(ctx context.Context) (*oauth2.Token, error) {
			return j.Token(withSpanInfo(ctx, name, safe))
		}
	}
	cc := &clientcredentials.Config{
		ClientID:     s.clientID,
		ClientSecret: s.secret,
		TokenURL:     s.tokenURL,
		AuthStyle:    oauth2.AuthStyleInParams, // Salesforce reads form fields
	}
	return func(ctx context.Context) (*oauth2.Token, error) {
		ctx = context.WithValue(withSpanInfo(ctx, name, safe), oauth2.HTTPClient, hc)
		return cc.Token(ctx) // clientcredentials.Config.Token fetches anew each time
	}
}
