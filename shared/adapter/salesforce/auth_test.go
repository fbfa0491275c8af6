package salesforce

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty", Config{}, []string{"TokenURL is required", "ClientID is required", "ClientSecret (client credentials) or JWTKeyFile (JWT bearer) is required"}},
		{"relative url", Config{TokenURL: "acme.my.salesforce.com", ClientID: "x", ClientSecret: "y"}, []string{"TokenURL must be an absolute http(s) URL"}},
		{"both flows", Config{TokenURL: "https://acme.my.salesforce.com", ClientID: "x", ClientSecret: "y", JWTKeyPEM: []byte("k"), Username: "u"}, []string{"not both"}},
		{"login host", Config{TokenURL: "https://login.salesforce.com", ClientID: "x", ClientSecret: "y"}, []string{"My Domain"}},
		{"jwt without user", Config{TokenURL: "https://acme.my.salesforce.com", ClientID: "x", JWTKeyPEM: privateKeyPEM(testKey())}, []string{"Username is required"}},
		{"bad key", Config{TokenURL: "https://acme.my.salesforce.com", ClientID: "x", JWTKeyPEM: []byte("not a key"), Username: "u"}, []string{"JWT key"}},
		{"missing key file", Config{TokenURL: "https://acme.my.salesforce.com", ClientID: "x", JWTKeyFile: "/nonexistent/key.pem", Username: "u"}, []string{"JWTKeyFile"}},
		{"bad version", Config{TokenURL: "https://acme.my.salesforce.com", ClientID: "x", ClientSecret: "y", APIVersion: "62"}, []string{"APIVersion"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(context.Background(), c.cfg)
			require.Error(t, err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "y\"") // the secret is never echoed
		})
	}

	c, err := New(context.Background(), Config{TokenURL: "https://acme.my.salesforce.com/", ClientID: "x", ClientSecret: "y", APIVersion: "63.0"})
	require.NoError(t, err)
	assert.Equal(t, "v63.0", c.APIVersion())
	assert.Equal(t, "https://acme.my.salesforce.com/services/oauth2/token", c.s.tokenURL)

	c, err = New(context.Background(), Config{TokenURL: "https://acme--uat.sandbox.my.salesforce.com", ClientID: "x", JWTKeyPEM: privateKeyPEM(testKey()), Username: "u"})
	require.NoError(t, err)
	assert.Equal(t, AudienceSandbox, c.s.audience)
	assert.Equal(t, DefaultAPIVersion, c.APIVersion())
}

func TestClientCredentialsFlow(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)

	inst, err := c.InstanceURL(ctx)
	require.NoError(t, err)
	assert.Equal(t, e.base, inst, "instance_url is taken from the token response")
	tok := c.tokens.cur.token
	assert.True(t, tok.Expiry.IsZero(), "no expires_in: valid until a 401")
	assert.True(t, tok.Valid())
	assert.NotEmpty(t, c.tokens.cur.orgID, "org id from the token's id URL")
	assert.True(t, strings.HasPrefix(c.tokens.cur.orgID, "00D"), c.tokens.cur.orgID)

	limits, err := c.Limits(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(100000), limits["DailyApiRequests"].Max)
	assert.Equal(t, int64(1), c.TokenFetches())
	assert.Equal(t, int64(1), c.APICalls())

	calls := callsOn(e.org, sandbox.RouteLimits)
	require.Len(t, calls, 1)
	assert.Equal(t, "optout-sync", calls[0].Client, "Sforce-Call-Options client= is sent on every call")
}

func TestJWTBearerFlow(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, jwtConfig(t))
	ctx := ctxT(t)

	d, err := c.Describe(ctx, "Contact")
	require.NoError(t, err)
	f, ok := d.Field("HasOptedOutOfEmail")
	require.True(t, ok)
	assert.Equal(t, "boolean", f.Type)
	assert.True(t, f.Updateable)
	assert.Equal(t, int64(1), c.TokenFetches())

	// A token that expires is replaced by signing a new assertion.
	e.org.ExpireTokens()
	_, err = c.Describe(ctx, "Lead")
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.TokenFetches())
}

func TestJWTBearerWrongKey(t *testing.T) {
	e := newEnv(t, func(oc *sandbox.OrgConfig) {
		oc.JWTPublicKeyPEM = publicKeyPEM(otherKey()) // not the signing key
	})
	c := e.client(t, jwtConfig(t))
	_, err := c.Limits(ctxT(t))
	se := errOf(t, err)
	assert.Equal(t, PermanentTenant, se.Class, "%v", err)
	assert.Equal(t, http.StatusBadRequest, se.Status)
	assert.Equal(t, "invalid_grant", se.Code)
	assert.Equal(t, int64(0), c.APICalls(), "no data call without a token")
}

func TestBadClientCredentials(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, func(c *Config) { c.ClientSecret = "wrong-secret-value" })
	_, err := c.Limits(ctxT(t))
	se := errOf(t, err)
	assert.Equal(t, PermanentTenant, se.Class, "%v", err)
	assert.Contains(t, []string{"invalid_client", "invalid_grant", "invalid_client_id"}, se.Code)
	assert.NotContains(t, err.Error(), "wrong-secret-value")
	assert.True(t, strings.HasPrefix(se.Op, "limits"), se.Op)

	// Unknown client id.
	c = e.client(t, func(c *Config) { c.ClientID = "nobody" })
	_, err = c.Limits(ctxT(t))
	assert.Equal(t, PermanentTenant, ClassOf(err), "%v", err)
}

func TestTokenEndpointFault(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteToken, Status: 400, ErrorCode: "invalid_grant", Message: "authentication failure", Times: 1})
	_, err := c.Limits(ctxT(t))
	se := errOf(t, err)
	assert.Equal(t, "invalid_grant", se.Code)
	assert.Equal(t, PermanentTenant, se.Class)

	// A 503 from the token endpoint is retryable, and the next call works.
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteToken, Status: 503, HTML: true, Times: 1})
	_, err = c.Limits(ctxT(t))
	assert.Equal(t, Retryable, ClassOf(err), "%v", err)
	_, err = c.Limits(ctxT(t))
	require.NoError(t, err)
}

func TestExpiredTokenRefreshedOnce(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)
	_, err := c.Limits(ctx)
	require.NoError(t, err)

	e.org.ExpireTokens()
	_, err = c.Limits(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.TokenFetches(), "one refresh")
	calls := callsOn(e.org, sandbox.RouteLimits)
	require.Len(t, calls, 3)
	assert.Equal(t, http.StatusUnauthorized, calls[1].Status)
	assert.Equal(t, http.StatusOK, calls[2].Status)
}

func TestAuthAfterRefreshFails(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteLimits, Status: 401, ErrorCode: "INVALID_SESSION_ID", Message: "Session expired or invalid"})
	_, err := c.Limits(ctxT(t))
	se := errOf(t, err)
	assert.Equal(t, Auth, se.Class)
	assert.Equal(t, "INVALID_SESSION_ID", se.Code)
	assert.Equal(t, int64(2), c.APICalls(), "the call is retried exactly once")
	assert.Equal(t, int64(2), c.TokenFetches(), "the token is fetched again exactly once")
}

func TestNoRefreshOn403OrScope(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)

	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteLimits, Status: 403, ErrorCode: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded."})
	_, err := c.Limits(ctx)
	assert.Equal(t, Quota, ClassOf(err), "%v", err)
	assert.Equal(t, int64(1), c.APICalls())
	assert.Equal(t, int64(1), c.TokenFetches())
	e.org.ClearFaults()

	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteLimits, Status: 401, ErrorCode: "INVALID_SESSION_ID", Message: "This session is not valid for use with the REST API"})
	_, err = c.Limits(ctx)
	assert.Equal(t, PermanentTenant, ClassOf(err), "%v", err)
	assert.Equal(t, int64(2), c.APICalls(), "no retry")
	assert.Equal(t, int64(1), c.TokenFetches(), "no refresh")
	e.org.ClearFaults()

	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteLimits, Status: 401, ErrorCode: "INVALID_AUTH_HEADER", Message: "INVALID_HEADER_TYPE"})
	_, err = c.Limits(ctx)
	assert.Equal(t, Auth, ClassOf(err), "%v", err)
	assert.Equal(t, int64(3), c.APICalls(), "a malformed header is not fixed by a new token")
	assert.Equal(t, int64(1), c.TokenFetches())
	e.org.ClearFaults()

	// An expired JWT-format token is a token problem: refreshed once.
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteLimits, Status: 401, ErrorCode: "INVALID_AUTH_HEADER", Message: "INVALID_JWT_FORMAT", Times: 1})
	_, err = c.Limits(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.TokenFetches())
}

func TestConcurrentCallsShareOneRefresh(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t)
	_, err := c.Limits(ctx)
	require.NoError(t, err)
	e.org.ExpireTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Limits(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), c.TokenFetches(), "8 concurrent 401s on one token cause one refresh")
}

func TestAPIVersionRetiredOrUnknown(t *testing.T) {
	e := newEnv(t, func(oc *sandbox.OrgConfig) { oc.RetiredAPIVersions = []string{"30.0"} })
	ctx := ctxT(t)

	c := e.client(t, func(c *Config) { c.APIVersion = "v30.0" })
	_, err := c.Limits(ctx)
	se := errOf(t, err)
	assert.Equal(t, http.StatusGone, se.Status)
	assert.Equal(t, PermanentTenant, se.Class, "a retired version needs a config change")

	c = e.client(t, func(c *Config) { c.APIVersion = "99.0" })
	_, err = c.Limits(ctx)
	se = errOf(t, err)
	assert.Equal(t, http.StatusNotFound, se.Status)
	assert.Equal(t, PermanentTenant, se.Class, "NOT_FOUND on an endpoint is no record's fault")

	c = e.client(t, func(c *Config) { c.APIVersion = "v66.0" })
	_, err = c.Limits(ctx)
	require.NoError(t, err)
	calls := callsOn(e.org, sandbox.RouteLimits)
	assert.Contains(t, calls[len(calls)-1].Path, "/v66.0/")
}
