package sandbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// session is one issued access token.
type session struct {
	issued   time.Time
	lastUsed time.Time
	revoked  bool
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// serveToken handles /services/oauth2/token. org is nil on the login-host
// endpoint, which finds the org by client id and refuses client_credentials.
func (s *Sandbox) serveToken(w http.ResponseWriter, r *http.Request, org *Org) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "must use HTTP POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form body")
		return
	}
	loginHost := org == nil
	if loginHost {
		org = s.orgForGrant(r)
		if org == nil {
			oauthError(w, http.StatusBadRequest, "invalid_client_id", "client identifier invalid")
			return
		}
	}
	call := Call{Route: RouteToken, Method: r.Method, Path: r.URL.Path, Client: callClient(r)}
	rec := &recorder{ResponseWriter: w}
	defer func() { call.Status = rec.status; org.logCall(call) }()
	if f := org.matchFault(RouteToken, nil); f != nil && org.applyCallFault(rec, r, f, &call, nil) {
		return
	}
	org.issueToken(rec, r, loginHost)
}

// orgForGrant finds the org a login-host request is for: client_id, or the JWT iss.
func (s *Sandbox) orgForGrant(r *http.Request) *Org {
	id := r.PostForm.Get("client_id")
	if id == "" && r.PostForm.Get("assertion") != "" {
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(r.PostForm.Get("assertion"), claims); err == nil {
			id, _ = claims["iss"].(string)
		}
	}
	for _, name := range s.names {
		if o := s.orgs[name]; o.cfg.ClientID == id && id != "" {
			return o
		}
	}
	return nil
}

func (o *Org) issueToken(w http.ResponseWriter, r *http.Request, loginHost bool) {
	f := r.PostForm
	o.mu.Lock()
	cfg := o.cfg
	o.mu.Unlock()
	var refresh string
	switch f.Get("grant_type") {
	case "client_credentials":
		if loginHost && !cfg.Behavior.AllowClientCredentialsOnLoginHost {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "request not supported on this domain")
			return
		}
		if f.Get("client_id") != cfg.ClientID {
			oauthError(w, http.StatusBadRequest, "invalid_client_id", "client identifier invalid")
			return
		}
		if f.Get("client_secret") != cfg.ClientSecret {
			oauthError(w, http.StatusBadRequest, "invalid_client", "invalid client credentials")
			return
		}
	case grantJWTBearer:
		if code, desc := o.verifyAssertion(f.Get("assertion"), o.baseURL(r)); code != "" {
			oauthError(w, http.StatusBadRequest, code, desc)
			return
		}
	case "refresh_token":
		if f.Get("client_id") != cfg.ClientID {
			oauthError(w, http.StatusBadRequest, "invalid_client_id", "client identifier invalid")
			return
		}
		if sec := f.Get("client_secret"); sec != "" && sec != cfg.ClientSecret {
			oauthError(w, http.StatusBadRequest, "invalid_client", "invalid client credentials")
			return
		}
		rt := f.Get("refresh_token")
		o.mu.Lock()
		valid := o.refreshTokens[rt]
		if valid && cfg.Behavior.RefreshTokenRotation {
			delete(o.refreshTokens, rt)
			refresh = o.orgID.String()[:15] + "!" + randomToken(32)
			o.refreshTokens[refresh] = true
		}
		o.mu.Unlock()
		if !valid {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "expired access/refresh token")
			return
		}
	case "":
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant type not supported")
		return
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant type not supported")
		return
	}
	now := o.now()
	token := o.orgID.String()[:15] + "!AR" + randomToken(48)
	o.mu.Lock()
	o.sessions[token] = &session{issued: now, lastUsed: now}
	o.mu.Unlock()
	issued := strconv.FormatInt(now.UnixMilli(), 10)
	base := o.baseURL(r)
	idURL := base + "/id/" + o.orgID.String() + "/" + o.userID.String()
	mac := hmac.New(sha256.New, []byte(cfg.ClientSecret))
	mac.Write([]byte(idURL + issued))
	body := map[string]string{
		"access_token": token,
		"instance_url": base,
		"id":           idURL,
		"token_type":   "Bearer",
		"issued_at":    issued,
		"signature":    base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		"scope":        "api",
	}
	if refresh != "" {
		body["refresh_token"] = refresh
	}
	writeJSON(w, http.StatusOK, body)
}

// verifyAssertion checks an RS256 jwt-bearer assertion; it returns the OAuth
// error code and description, or "" when valid.
func (o *Org) verifyAssertion(assertion, base string) (string, string) {
	if o.pubKey == nil {
		return "invalid_grant", "invalid assertion"
	}
	if assertion == "" {
		return "invalid_grant", "invalid assertion"
	}
	claims := jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(assertion, &claims, func(*jwt.Token) (any, error) { return o.pubKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(o.now))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "invalid_grant", "expired authorization code"
	case err != nil:
		return "invalid_grant", "invalid assertion"
	}
	o.mu.Lock()
	cfg := o.cfg
	o.mu.Unlock()
	if claims.Issuer != cfg.ClientID {
		return "invalid_client_id", "client identifier invalid"
	}
	if claims.ExpiresAt.Sub(o.now()) > cfg.Behavior.JWTMaxLifetime+30*time.Second {
		return "invalid_grant", "invalid assertion"
	}
	auds := cfg.Behavior.JWTAudiences
	if len(auds) == 0 {
		auds = []string{"https://login.salesforce.com", "https://test.salesforce.com", base}
	}
	okAud := false
	for _, a := range claims.Audience {
		for _, want := range auds {
			if strings.TrimSuffix(a, "/") == strings.TrimSuffix(want, "/") {
				okAud = true
			}
		}
	}
	if !okAud {
		return "invalid_grant", "audience is invalid"
	}
	if claims.Subject != cfg.Username {
		return "invalid_grant", "user hasn't approved this consumer"
	}
	return "", ""
}

// IssueRefreshToken creates a refresh token as a web-server flow would have.
func (o *Org) IssueRefreshToken() string {
	t := o.orgID.String()[:15] + "!" + randomToken(32)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refreshTokens[t] = true
	return t
}

// ExpireTokens makes every issued access token answer 401 INVALID_SESSION_ID.
func (o *Org) ExpireTokens() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.sessions {
		s.revoked = true
	}
}

// RevokeToken revokes one access or refresh token; it reports whether it existed.
func (o *Org) RevokeToken(token string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s, ok := o.sessions[token]; ok {
		s.revoked = true
		return true
	}
	if o.refreshTokens[token] {
		delete(o.refreshTokens, token)
		return true
	}
	return false
}

// authenticate checks the Authorization header of a data call and answers 401 itself.
func (o *Org) authenticate(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	o.mu.Lock()
	missingCode := o.cfg.Behavior.MissingAuthErrorCode
	timeout := o.cfg.Behavior.SessionTimeout
	o.mu.Unlock()
	if h == "" {
		msg := "Session expired or invalid"
		if missingCode == "INVALID_AUTH_HEADER" {
			msg = "INVALID_HEADER_TYPE"
		}
		writeError(w, http.StatusUnauthorized, missingCode, msg, nil)
		return false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "OAuth")) || tok == "" || strings.ContainsAny(tok, " \t") {
		writeError(w, http.StatusUnauthorized, "INVALID_AUTH_HEADER", "INVALID_HEADER_TYPE", nil)
		return false
	}
	now := o.now()
	o.mu.Lock()
	s, ok := o.sessions[tok]
	valid := ok && !s.revoked && (timeout <= 0 || now.Sub(s.lastUsed) < timeout)
	if valid {
		s.lastUsed = now
	}
	o.mu.Unlock()
	if !valid {
		writeError(w, http.StatusUnauthorized, "INVALID_SESSION_ID", "Session expired or invalid", nil)
		return false
	}
	return true
}
