package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIDChecksum(t *testing.T) {
	for in, want := range map[string]string{
		"001D000000IRFma": "001D000000IRFmaIAH",
		"003RO0000035WQg": "003RO0000035WQgYAM",
		"00558000001N0Ke": "00558000001N0KeAAK",
	} {
		got, ok := To18(in)
		if !ok || got != want {
			t.Errorf("To18(%s) = %s, %v; want %s", in, got, ok, want)
		}
		if again, ok := To18(want); !ok || again != want {
			t.Errorf("To18(%s) not idempotent: %s", want, again)
		}
	}
	for _, bad := range []string{"", "003", "003RO0000035WQgAAA", "003RO0000035WQ!", "003RO0000035WQgYAMX"} {
		if _, ok := To18(bad); ok {
			t.Errorf("To18(%q) accepted", bad)
		}
	}
	id := makeID(prefixContact, 12345)
	if _, ok := To18(id.String()); !ok || id.Prefix() != "003" {
		t.Errorf("generated id %s invalid", id)
	}
}

func TestTokenClientCredentials(t *testing.T) {
	e := newEnv(t)
	ok := e.form(e.base("acme")+"/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"acme-id"}, "client_secret": {"acme-secret"}})
	golden(t, "token_success", ok)
	var tok map[string]any
	ok.json(t, &tok)
	if _, has := tok["expires_in"]; has {
		t.Error("expires_in must be absent")
	}
	if s, _ := tok["issued_at"].(string); len(s) != 13 {
		t.Errorf("issued_at %v is not a 13-digit string", tok["issued_at"])
	}
	if tok["instance_url"] != e.base("acme") {
		t.Errorf("instance_url %v", tok["instance_url"])
	}
	// A bare origin: clients resolving services/data/... against it (jsforce
	// does for Bulk API 2.0) reach the org.
	inst, err := url.Parse(tok["instance_url"].(string))
	if err != nil || inst.Path != "" {
		t.Fatalf("instance_url %v has a path (%v)", tok["instance_url"], err)
	}
	limits := inst.ResolveReference(&url.URL{Path: "services/data/v62.0/limits"}).String()
	if r := e.raw("GET", limits, nil, map[string]string{"Authorization": "Bearer " + tok["access_token"].(string)}); r.status != 200 {
		t.Errorf("GET %s: %d %s", limits, r.status, r.body)
	}
	if r := e.raw("GET", "/orgs/acme/services/data/", nil, nil); r.status != 404 {
		t.Errorf("the control server still serves orgs under /orgs/: %d", r.status)
	}
	if id, _ := tok["id"].(string); !strings.HasSuffix(id, "/"+e.org("acme").OrgID()+"/"+e.org("acme").userID.String()) {
		t.Errorf("id %s", id)
	}
	cases := []struct {
		name, path string
		form       url.Values
		code, desc string
	}{
		{"bad secret", e.base("acme") + "/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"acme-id"}, "client_secret": {"x"}}, "invalid_client", "invalid client credentials"},
		{"bad client", e.base("acme") + "/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"x"}, "client_secret": {"acme-secret"}}, "invalid_client_id", "client identifier invalid"},
		{"login host", "/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"acme-id"}, "client_secret": {"acme-secret"}}, "invalid_grant", "request not supported on this domain"},
		{"bad grant", e.base("acme") + "/services/oauth2/token", url.Values{"grant_type": {"password"}}, "unsupported_grant_type", "grant type not supported"},
		{"bad refresh", e.base("acme") + "/services/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"acme-id"}, "refresh_token": {"nope"}}, "invalid_grant", "expired access/refresh token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.form(c.path, c.form)
			var body map[string]string
			r.json(t, &body)
			if r.status != 400 || body["error"] != c.code || body["error_description"] != c.desc {
				t.Errorf("got %d %v", r.status, body)
			}
		})
	}
}

func TestTokenJWTBearer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	e := newEnv(t, func(c *Config) { c.Orgs[0].JWTPublicKeyPEM = pemKey })
	now := e.clock.Now()
	sign := func(iss, sub, aud string, exp time.Duration, k *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{Issuer: iss, Subject: sub,
			Audience: jwt.ClaimStrings{aud}, ExpiresAt: jwt.NewNumericDate(now.Add(exp))})
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := []struct {
		name, path, assertion, wantErr string
	}{
		{"ok my domain", e.base("acme") + "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://login.salesforce.com", 3*time.Minute, key), ""},
		{"ok login host", "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://test.salesforce.com", 3*time.Minute, key), ""},
		{"wrong user", e.base("acme") + "/services/oauth2/token", sign("acme-id", "who@x", "https://login.salesforce.com", 3*time.Minute, key), "invalid_grant"},
		{"wrong key", e.base("acme") + "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://login.salesforce.com", 3*time.Minute, other), "invalid_grant"},
		{"expired", e.base("acme") + "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://login.salesforce.com", -time.Minute, key), "invalid_grant"},
		{"too long", e.base("acme") + "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://login.salesforce.com", time.Hour, key), "invalid_grant"},
		{"bad aud", e.base("acme") + "/services/oauth2/token", sign("acme-id", "int@acme.test", "https://evil", 3*time.Minute, key), "invalid_grant"},
		{"bad iss", e.base("acme") + "/services/oauth2/token", sign("nope", "int@acme.test", "https://login.salesforce.com", 3*time.Minute, key), "invalid_client_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.form(c.path, url.Values{"grant_type": {grantJWTBearer}, "assertion": {c.assertion}})
			var body map[string]string
			r.json(t, &body)
			if c.wantErr == "" {
				if r.status != 200 || body["access_token"] == "" {
					t.Fatalf("got %d %s", r.status, r.body)
				}
				// Both endpoints name the org's own origin, never the login host.
				if body["instance_url"] != e.base("acme") {
					t.Errorf("instance_url %q, want %q", body["instance_url"], e.base("acme"))
				}
				if d := e.api(body["access_token"], "GET", "acme", "/limits", nil); d.status != 200 {
					t.Errorf("token unusable: %d", d.status)
				}
				return
			}
			if r.status != 400 || body["error"] != c.wantErr {
				t.Errorf("got %d %s, want %s", r.status, r.body, c.wantErr)
			}
		})
	}
}

func TestTokenRefresh(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.RefreshTokenRotation = true })
	rt := e.org("acme").IssueRefreshToken()
	form := url.Values{"grant_type": {"refresh_token"}, "client_id": {"acme-id"}, "client_secret": {"acme-secret"}, "refresh_token": {rt}}
	r := e.form(e.base("acme")+"/services/oauth2/token", form)
	var body map[string]string
	r.json(t, &body)
	if r.status != 200 || body["refresh_token"] == "" || body["refresh_token"] == rt {
		t.Fatalf("rotation: %d %s", r.status, r.body)
	}
	if again := e.form(e.base("acme")+"/services/oauth2/token", form); again.status != 400 {
		t.Errorf("old refresh token still valid: %d", again.status)
	}
}

func TestAuthErrors(t *testing.T) {
	e := newEnv(t)
	tok := e.token("acme")
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 200 {
		t.Fatalf("limits %d", r.status)
	}
	if r := e.api(e.token("globex"), "GET", "acme", "/limits", nil); r.status != 401 {
		t.Errorf("other org's token accepted: %d", r.status)
	}
	e.org("acme").ExpireTokens()
	r := e.api(tok, "GET", "acme", "/sobjects/Contact/describe", nil)
	golden(t, "invalid_session_401", r, "Sforce-Limit-Info")
	for name, h := range map[string]string{"basic": "Basic abc", "empty bearer": "Bearer ", "no scheme": "abc"} {
		r := e.raw("GET", e.base("acme")+"/services/data/v62.0/limits", nil, map[string]string{"Authorization": h})
		if r.status != 401 || errCode(t, r) != "INVALID_AUTH_HEADER" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := e.raw("GET", e.base("acme")+"/services/data/v62.0/limits", nil, nil); r.status != 401 || errCode(t, r) != "INVALID_SESSION_ID" {
		t.Errorf("missing header: %d %s", r.status, r.body)
	}
	if r := e.api(e.token("acme"), "GET", "acme", "/limits", nil); r.status != 200 {
		t.Errorf("new token after expiry: %d", r.status)
	}
}

func TestSessionTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.SessionTimeout = time.Hour })
	tok := e.token("acme")
	e.clock.Advance(59 * time.Minute)
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 200 {
		t.Fatalf("active session refused: %d", r.status)
	}
	e.clock.Advance(61 * time.Minute)
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 401 {
		t.Errorf("idle session accepted: %d", r.status)
	}
}

func TestVersionsAndLimits(t *testing.T) {
	e := newEnv(t)
	r := e.raw("GET", e.base("acme")+"/services/data/", nil, nil)
	var versions []map[string]string
	r.json(t, &versions)
	if r.status != 200 || len(versions) != 5 || versions[0]["version"] != "62.0" || versions[0]["label"] != "Winter '25" || versions[0]["url"] != "/services/data/v62.0" {
		t.Errorf("versions: %d %s", r.status, r.body)
	}
	if r.header.Get("Sforce-Limit-Info") != "" {
		t.Error("versions must not carry Sforce-Limit-Info")
	}
	tok := e.token("acme")
	if r := e.raw("GET", e.base("acme")+"/services/data/v30.0/limits", nil, map[string]string{"Authorization": "Bearer " + tok}); r.status != 410 {
		t.Errorf("retired: %d", r.status)
	}
	if r := e.raw("GET", e.base("acme")+"/services/data/v99.0/limits", nil, map[string]string{"Authorization": "Bearer " + tok}); r.status != 404 {
		t.Errorf("unknown version: %d", r.status)
	}
	r1 := e.api(tok, "GET", "acme", "/limits", nil)
	if got := r1.header.Get("Sforce-Limit-Info"); got != "api-usage=1/1000" {
		t.Errorf("first call header %q", got)
	}
	var lim map[string]limitPair
	r1.json(t, &lim)
	if lim["DailyApiRequests"] != (limitPair{Max: 1000, Remaining: 999}) {
		t.Errorf("limits %v", lim["DailyApiRequests"])
	}
	// errors carry the header too
	r404 := e.api(tok, "GET", "acme", "/sobjects/Contact/003RO0000035WQgYAM", nil)
	if r404.status != 404 || r404.header.Get("Sforce-Limit-Info") != "api-usage=2/1000" {
		t.Errorf("404: %d %q", r404.status, r404.header.Get("Sforce-Limit-Info"))
	}
	if e.org("acme").APICalls() != 2 {
		t.Errorf("APICalls %d", e.org("acme").APICalls())
	}
	e.org("acme").SetAPIUsage(1000)
	over := e.api(tok, "GET", "acme", "/limits", nil)
	golden(t, "request_limit_exceeded_403", over, "Sforce-Limit-Info")
	if e.org("acme").APICalls() != 1000 {
		t.Error("refused call was counted")
	}
}

func TestConcurrentLongRequests(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Orgs[0].Behavior.ConcurrentLongRequests = 1
		c.Orgs[0].Behavior.LongRequestThreshold = time.Nanosecond
	})
	o := e.org("acme")
	tok := e.token("acme")
	o.InjectFault(Fault{Route: RouteLimits, Delay: time.Minute, Times: 1})
	done := make(chan struct{})
	defer func() {
		e.local.Orgs["acme"].CloseClientConnections()
		<-done
	}()
	go func() {
		defer close(done)
		// The slow call ends when the test closes its connection.
		_ = e.api(tok, "GET", "acme", "/limits", nil)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.mu.Lock()
		n := len(o.inflight)
		o.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow request never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := e.api(tok, "GET", "acme", "/sobjects/Contact/describe", nil)
	var errs []apiError
	r.json(t, &errs)
	if r.status != 403 || errs[0].Message != "ConcurrentPerOrgLongTxn Limit exceeded." {
		t.Errorf("got %d %s", r.status, r.body)
	}
}
