package salesforce

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// foreignHost plays every non-loopback host on a loopback listener: the
// client's transport sends what it would send to such a host through it as
// an HTTP proxy, so the test sees exactly what would have left the machine,
// and nothing does (the names end in .invalid and never resolve anyway).
type foreignHost struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD host path | Authorization | body"
}

func newForeignHost(t *testing.T) *foreignHost {
	f := &foreignHost{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.Host+" "+r.URL.Path+" | "+r.Header.Get("Authorization")+" | "+string(body))
		f.mu.Unlock()
		http.Error(w, "foreign host", http.StatusForbidden)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *foreignHost) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// transport dials loopback hosts directly (the token endpoint under test)
// and sends everything else to the foreign host.
func (f *foreignHost) transport(base *http.Transport) *http.Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	} else {
		base = base.Clone()
	}
	proxy, _ := url.Parse(f.srv.URL)
	base.Proxy = func(r *http.Request) (*url.URL, error) {
		if ip := net.ParseIP(r.URL.Hostname()); ip != nil && ip.IsLoopback() {
			return nil, nil
		}
		return proxy, nil
	}
	return base
}

// tokenServer answers every token request with instance, on loopback.
func tokenServer(t *testing.T, instance string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"access_token": "00Dxx0000001gPL!AccessTokenThatMustStayHome",
			"instance_url": instance,
			"token_type":   "Bearer",
			"id":           "https://login.salesforce.com/id/00Dxx0000001gPLEAA/005xx000001SvKAAA0",
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Finding 1: a token URL on plain http at a non-loopback host received the
// client secret. Now the client refuses it before any request, with a reason
// an admin can act on.
func TestPlainHTTPTokenURLGetsNoSecret(t *testing.T) {
	f := newForeignHost(t)
	for _, tokenURL := range []string{"http://acme.my.salesforce.invalid", "http://login.attacker.invalid/services/oauth2/token"} {
		c, err := New(context.Background(), Config{TokenURL: tokenURL, ClientID: "id", ClientSecret: "s3cret-must-stay-home",
			Transport: f.transport(nil)})
		if err == nil {
			_, err = c.InstanceURL(ctxT(t))
		}
		require.Error(t, err, tokenURL)
		assert.Contains(t, err.Error(), "https", "the reason says what to fix")
		assert.NotContains(t, err.Error(), "s3cret")
	}
	assert.Empty(t, f.requests(), "nothing went to a non-loopback host")
}

// The dev cluster's sandbox is reachable over plain http only when the
// operator lists its host; loopback always is (tests, the local demo).
func TestInsecureHTTPOnlyWhereListed(t *testing.T) {
	cfg := Config{TokenURL: "http://optout-sync-sfsandbox:8086", ClientID: "id", ClientSecret: "s"}
	_, err := New(context.Background(), cfg)
	require.ErrorContains(t, err, EnvInsecureHTTPHosts)
	cfg.Endpoints.InsecureHTTPHosts = []string{"optout-sync-sfsandbox"}
	_, err = New(context.Background(), cfg)
	require.NoError(t, err)
	assert.Contains(t, cfg.Endpoints.Warning(), "optout-sync-sfsandbox", "the relaxation is said at start")
	_, err = New(context.Background(), Config{TokenURL: "http://127.0.0.1:1", ClientID: "id", ClientSecret: "s"})
	require.NoError(t, err)
}

// Finding 2: a token endpoint answering 307 to another host got the form
// body, client secret included, re-sent there. Now the redirect is not
// followed and the tenant's error says why.
func TestTokenRedirectToAnotherHostNotFollowed(t *testing.T) {
	f := newForeignHost(t)
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		for _, target := range []string{"http://collector.attacker.invalid/services/oauth2/token", "https://collector.attacker.invalid/services/oauth2/token"} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target, code)
			}))
			c, err := New(context.Background(), Config{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s3cret-must-stay-home",
				Transport: f.transport(nil)})
			require.NoError(t, err)
			_, err = c.InstanceURL(ctxT(t))
			e := errOf(t, err)
			assert.Equal(t, PermanentTenant, e.Class, "an admin must fix the token URL: %v", err)
			assert.Contains(t, err.Error(), "redirected to another host")
			srv.Close()
		}
	}
	assert.Empty(t, f.requests(), "nothing went to the redirect's host")
}

// A redirect within the same https host is still followed.
func TestTokenRedirectSameHostFollowed(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == tokenPath {
			http.Redirect(w, r, "/moved"+tokenPath, http.StatusTemporaryRedirect)
			return
		}
		require.NoError(t, r.ParseForm())
		assert.Equal(t, "s", r.PostForm.Get("client_secret"), "307 keeps the body on the same host")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"access_token": "t", "instance_url": srv.URL})
	}))
	defer srv.Close()
	c, err := New(context.Background(), Config{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s",
		Transport: srv.Client().Transport})
	require.NoError(t, err)
	inst, err := c.InstanceURL(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, srv.URL, inst)
}

// Finding 3: the access token followed whatever instance_url said. Now an
// instance_url off the tenant's My Domain and Salesforce's hosts, or on plain
// http, gets nothing, and the tenant is unhealthy with the host named.
func TestForeignInstanceURLGetsNoToken(t *testing.T) {
	f := newForeignHost(t)
	for _, inst := range []string{
		"http://evil.attacker.invalid",
		"https://evil.attacker.invalid",
		"https://acme.my.salesforce.com.attacker.invalid",
		"http://acme.my.salesforce.com", // right host, plain http
	} {
		srv := tokenServer(t, inst)
		c, err := New(context.Background(), Config{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s",
			Transport: f.transport(nil)})
		require.NoError(t, err)
		_, err = c.Limits(ctxT(t))
		e := errOf(t, err)
		assert.Equal(t, PermanentTenant, e.Class, "%s: %v", inst, err)
		assert.Contains(t, err.Error(), "instance_url")
		assert.NotContains(t, err.Error(), "AccessTokenThatMustStayHome")
		_, err = c.UpdateOptOut(ctxT(t), []Update{{ID: "003xx000004TmiQAAS", Field: "HasOptedOutOfEmail", Value: true}})
		require.Error(t, err)
		assert.Zero(t, c.APICalls(), "%s: no data call was sent", inst)
	}
	for _, r := range f.requests() {
		t.Errorf("sent to a foreign host: %s", r)
	}
}

func TestEndpointPolicyInstanceHosts(t *testing.T) {
	p := EndpointPolicy{AllowedHosts: []string{"*.crm.example.com", "sf.example.org"}}
	for inst, ok := range map[string]bool{
		"https://acme.my.salesforce.com":                  true,
		"https://na123.salesforce.com":                    true,
		"https://acme.lightning.force.com":                true,
		"https://acme.my.salesforce.com.attacker.invalid": false,
		"https://salesforce.com":                          false,
		"https://evilsalesforce.com":                      false,
		"https://eu.crm.example.com":                      true,
		"https://sf.example.org":                          true,
		"https://x.sf.example.org":                        false,
		"https://mydomain.example.net":                    true, // the token URL's host
		"http://127.0.0.1:8080":                           false,
	} {
		u, err := url.Parse(inst)
		require.NoError(t, err)
		msg := p.checkInstance(u, "mydomain.example.net")
		assert.Equal(t, ok, msg == "", "%s: %s", inst, msg)
		if !ok {
			assert.True(t, strings.Contains(msg, "instance_url") || strings.Contains(msg, "https"), msg)
		}
	}
}

// The Pub/Sub API gets the token under the same rule as the instance_url
// (TLS in place of https), and only for an endpoint checked by it.
func TestPubSubEndpointPolicy(t *testing.T) {
	p := EndpointPolicy{AllowedHosts: []string{"*.corp.example"}, InsecureHTTPHosts: []string{"sfsandbox"}}
	for _, c := range []struct {
		addr      string
		plaintext bool
		myDomain  string
		ok        bool
	}{
		{"api.pubsub.salesforce.com:7443", false, "acme.my.salesforce.com", true},
		{"api.deu.pubsub.salesforce.com:443", false, "acme.my.salesforce.com", true},
		{"pubsub.corp.example:443", false, "acme.my.salesforce.com", true},
		{"127.0.0.1:7443", true, "127.0.0.1", true},
		{"localhost:7443", true, "127.0.0.1", true},
		{"sfsandbox:7443", true, "sfsandbox", true},
		{"api.pubsub.salesforce.com:7443", true, "acme.my.salesforce.com", false}, // no TLS to a remote host
		{"10.1.2.3:7443", true, "10.1.2.3", false},
		{"pubsub.attacker.invalid:443", false, "acme.my.salesforce.com", false}, // not the token's host
		{"127.0.0.1:7443", true, "acme.my.salesforce.com", false},
		{"api.pubsub.salesforce.com", false, "acme.my.salesforce.com", false}, // no port
	} {
		msg := p.checkPubSub(c.addr, c.plaintext, c.myDomain)
		assert.Equal(t, c.ok, msg == "", "%s plaintext=%v: %s", c.addr, c.plaintext, msg)
	}
	c, err := New(context.Background(), Config{TokenURL: "http://127.0.0.1:1", ClientID: "id", ClientSecret: "s"})
	require.NoError(t, err)
	_, err = c.PubSubAuth(context.Background(), PubSubEndpoint{})
	assert.Equal(t, PermanentTenant, ClassOf(err), "an unchecked endpoint gets no token")
	assert.Equal(t, int64(0), c.TokenFetches())
}
