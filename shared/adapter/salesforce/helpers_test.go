package salesforce

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// Credentials of the emulated org "acme" (test values, not secrets).
const (
	testOrg      = "acme"
	testClientID = "acme-consumer-key"
	testSecret   = "acme-consumer-secret-Zx81"
	testUsername = "integration@acme.example.com"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

var otherKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func publicKeyPEM(k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func privateKeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// env is one emulator (sfsandbox) served over real HTTP, plus telemetry sinks.
type env struct {
	sb      *sandbox.Sandbox
	org     *sandbox.Org
	srv     *httptest.Server
	base    string // My Domain base and instance URL of acme
	spans   *tracetest.InMemoryExporter
	tp      *sdktrace.TracerProvider
	metrics *sdkmetric.ManualReader
	mp      *sdkmetric.MeterProvider
}

func newEnv(t testing.TB, mutate ...func(*sandbox.OrgConfig)) *env {
	t.Helper()
	oc := sandbox.OrgConfig{
		Name:                 testOrg,
		ClientID:             testClientID,
		ClientSecret:         testSecret,
		Username:             testUsername,
		JWTPublicKeyPEM:      publicKeyPEM(testKey()),
		DailyAPILimit:        100000,
		CustomField:          "Marketo_Sales_Opt_Out__c",
		CustomFieldInstalled: true,
		CustomFieldWritable:  true,
	}
	for _, m := range mutate {
		m(&oc)
	}
	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{oc}})
	require.NoError(t, err)
	l := sandbox.ServeLocal(sb, nil)
	t.Cleanup(l.Close)

	// base is the org's own origin: a bare instance_url, as Salesforce gives.
	e := &env{sb: sb, org: sb.Org(testOrg), srv: l.Orgs[testOrg], base: l.OrgURL(testOrg)}
	require.NotNil(t, e.org)
	e.spans = tracetest.NewInMemoryExporter()
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(e.spans))
	e.metrics = sdkmetric.NewManualReader()
	e.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.metrics))
	return e
}

// config is a client-credentials Config for acme.
func (e *env) config() Config {
	return Config{
		TokenURL:       e.base,
		ClientID:       testClientID,
		ClientSecret:   testSecret,
		Timeout:        30 * time.Second,
		TracerProvider: e.tp,
		MeterProvider:  e.mp,
	}
}

func (e *env) client(t testing.TB, mutate ...func(*Config)) *Client {
	t.Helper()
	cfg := e.config()
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(context.Background(), cfg)
	require.NoError(t, err)
	return c
}

// jwtConfig switches a Config to the JWT bearer flow with a key file.
func jwtConfig(t testing.TB) func(*Config) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(file, privateKeyPEM(testKey()), 0o600))
	return func(c *Config) {
		c.ClientSecret = ""
		c.Username = testUsername
		c.JWTKeyFile = file
	}
}

// callsOn returns the logged calls of one route.
func callsOn(org *sandbox.Org, route string) []sandbox.Call {
	var out []sandbox.Call
	for _, c := range org.Calls() {
		if c.Route == route {
			out = append(out, c)
		}
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// errOf asserts err is an *Error and returns it.
func errOf(t testing.TB, err error) *Error {
	t.Helper()
	require.Error(t, err)
	e, ok := err.(*Error)
	if !ok {
		var target *Error
		require.ErrorAs(t, err, &target)
		return target
	}
	return e
}
