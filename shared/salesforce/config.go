package salesforce

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults.
const (
	DefaultAPIVersion   = "v62.0"
	DefaultTimeout      = 2 * time.Minute
	DefaultCallClient   = "optout-sync"
	DefaultMaxURILength = 16384 // GET URI cap (spec §5); longer answers 414
	// AudienceProduction and AudienceSandbox are the JWT bearer `aud` values.
	AudienceProduction = "https://login.salesforce.com"
	AudienceSandbox    = "https://test.salesforce.com"
)

const tokenPath = "/services/oauth2/token"

// Config configures one Client, i.e. one org. The flow is JWT bearer when a
// key (JWTKeyFile or JWTKeyPEM) is set, client credentials otherwise.
type Config struct {
	// TokenURL is the org's My Domain base URL (https://acme.my.salesforce.com);
	// the token endpoint is TokenURL + /services/oauth2/token. A URL that
	// already ends in /services/oauth2/token is taken as is.
	TokenURL string
	// ClientID is the connected app's consumer key (both flows).
	ClientID string
	// ClientSecret selects the client-credentials flow.
	ClientSecret string
	// Username is the JWT `sub`; JWTKeyFile (or JWTKeyPEM) the PEM RSA key
	// that signs the assertion; JWTAudience its `aud` (default
	// login.salesforce.com, test.salesforce.com when TokenURL is a sandbox).
	Username    string
	JWTKeyFile  string
	JWTKeyPEM   []byte
	JWTAudience string
	// APIVersion like "v62.0" (or "62.0"); default v62.0.
	APIVersion string
	// HTTPClient is the base client (its Transport and Timeout are used);
	// Transport, when set, replaces its transport. Both are wrapped for tracing.
	HTTPClient *http.Client
	Transport  http.RoundTripper
	// Timeout bounds one HTTP exchange including reading the body (default 2m;
	// Bulk result pages are read within it).
	Timeout time.Duration
	// CallClient is sent as Sforce-Call-Options client=... so CDC can tell our
	// own writes apart (default optout-sync).
	CallClient string
	// Org labels this client's metrics (e.g. the tenant id); default the org
	// id from the token response. Must not be an email.
	Org string
	// MaxURILength caps GET URLs built by QueryIDs (default 16384).
	MaxURILength int
	// Endpoints is where credentials may go besides the defaults (see
	// endpoint.go); the zero value allows https to Salesforce's hosts only.
	Endpoints EndpointPolicy
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

var apiVersionRE = regexp.MustCompile(`^v?([0-9]{2,3})\.0$`)

// settings is a validated Config.
type settings struct {
	tokenURL    string
	clientID    string
	secret      string
	username    string
	key         *rsa.PrivateKey
	audience    string
	apiVersion  string // "v62.0"
	callClient  string
	org         string
	maxURI      int
	timeout     time.Duration
	baseClient  *http.Client
	tracer      trace.TracerProvider
	meter       metric.MeterProvider
	jwtLifetime time.Duration
	policy      EndpointPolicy
	myDomain    string // the token URL's host name: the tenant's own instance
}

func (cfg Config) validate() (*settings, error) {
	var problems []string
	s := &settings{
		clientID:    cfg.ClientID,
		secret:      cfg.ClientSecret,
		username:    cfg.Username,
		audience:    cfg.JWTAudience,
		callClient:  cfg.CallClient,
		org:         cfg.Org,
		maxURI:      cfg.MaxURILength,
		timeout:     cfg.Timeout,
		tracer:      cfg.TracerProvider,
		meter:       cfg.MeterProvider,
		jwtLifetime: 3 * time.Minute,
		policy:      cfg.Endpoints,
	}

	u, err := url.Parse(strings.TrimSpace(cfg.TokenURL))
	switch {
	case cfg.TokenURL == "":
		problems = append(problems, "TokenURL is required (the org's My Domain URL)")
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		problems = append(problems, "TokenURL must be an absolute http(s) URL")
	case s.policy.checkTransport("TokenURL", u) != "":
		problems = append(problems, s.policy.checkTransport("TokenURL", u))
	default:
		s.myDomain = u.Hostname()
		u.RawQuery, u.Fragment = "", ""
		base := strings.TrimSuffix(u.String(), "/")
		if !strings.HasSuffix(base, tokenPath) {
			base += tokenPath
		}
		s.tokenURL = base
	}
	if cfg.ClientID == "" {
		problems = append(problems, "ClientID is required")
	}

	jwtFlow := cfg.JWTKeyFile != "" || len(cfg.JWTKeyPEM) > 0
	switch {
	case jwtFlow && cfg.ClientSecret != "":
		problems = append(problems, "set either ClientSecret (client credentials) or JWTKeyFile (JWT bearer), not both")
	case jwtFlow:
		if cfg.Username == "" {
			problems = append(problems, "Username is required for the JWT bearer flow")
		}
		key, err := loadKey(cfg.JWTKeyFile, cfg.JWTKeyPEM)
		if err != nil {
			problems = append(problems, err.Error())
		}
		s.key = key
		if s.audience == "" {
			s.audience = AudienceProduction
			if u != nil && (strings.Contains(u.Host, ".sandbox.my.salesforce.com") || u.Host == "test.salesforce.com") {
				s.audience = AudienceSandbox
			}
		}
	case cfg.ClientSecret == "":
		problems = append(problems, "ClientSecret (client credentials) or JWTKeyFile (JWT bearer) is required")
	default:
		// Client credentials only work on the My Domain host (spec §1).
		if u != nil && (u.Host == "login.salesforce.com" || u.Host == "test.salesforce.com") {
			problems = append(problems, "client credentials need the org's My Domain URL, not "+u.Host)
		}
	}

	v := cfg.APIVersion
	if v == "" {
		v = DefaultAPIVersion
	}
	if m := apiVersionRE.FindStringSubmatch(v); m != nil {
		s.apiVersion = "v" + m[1] + ".0"
	} else {
		problems = append(problems, fmt.Sprintf("APIVersion %q: want the form v62.0", cfg.APIVersion))
	}

	if s.callClient == "" {
		s.callClient = DefaultCallClient
	}
	if strings.ContainsAny(s.callClient, ",;= \t\r\n") {
		problems = append(problems, "CallClient must be a single token")
	}
	if s.maxURI == 0 {
		s.maxURI = DefaultMaxURILength
	}
	if s.maxURI < 1024 {
		problems = append(problems, "MaxURILength must be at least 1024")
	}
	if s.timeout < 0 {
		problems = append(problems, "Timeout must not be negative")
	}
	if strings.Contains(s.org, "@") {
		problems = append(problems, "Org must not be an email address")
	}

	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{}
	}
	c := *base // never mutate the caller's client
	c.CheckRedirect = s.policy.checkRedirect
	if cfg.Transport != nil {
		c.Transport = cfg.Transport
	}
	if c.Transport == nil {
		c.Transport = sharedTransport
	}
	if s.timeout > 0 || c.Timeout == 0 {
		if s.timeout == 0 {
			s.timeout = DefaultTimeout
		}
		c.Timeout = s.timeout
	}
	s.baseClient = &c

	if len(problems) > 0 {
		return nil, errors.New("salesforce config: " + strings.Join(problems, "; "))
	}
	return s, nil
}

// sharedTransport is every client's default transport: one pool for every
// org, as http.DefaultTransport, but with no cap on idle connections in
// total. Each org is its own host (its instance URL), and the default's
// 100 idle connections for all hosts made a replica serving a thousand
// orgs dial again for most calls (a tenth of its CPU in issue 12's
// thousand-tenant benchmark). Two per host, as by default: one tenant's
// calls in flight are few.
var sharedTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0
	return t
}()

func loadKey(file string, pemBytes []byte) (*rsa.PrivateKey, error) {
	if len(pemBytes) == 0 {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("JWTKeyFile: %w", err)
		}
		pemBytes = b
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
	if err != nil {
		// The parser's message never includes key material.
		return nil, fmt.Errorf("JWT key: %w", err)
	}
	return key, nil
}
