// Package sfcreds finds each tenant's Salesforce credentials. They come from
// files (a Kubernetes Secret mounted per tenant) or the environment, never
// from KV, and are never logged.
package sfcreds

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// ErrNoCredentials means nothing is configured for the tenant; its events
// wait until an operator adds the Secret.
var ErrNoCredentials = errors.New("no Salesforce credentials configured")

// Files that make up one tenant's credentials, as keys of its Secret.
const (
	FileTokenURL     = "token_url"
	FileClientID     = "client_id"
	FileClientSecret = "client_secret"
	FileUsername     = "username"
	FileJWTKey       = "jwt_key.pem"
	FileAPIVersion   = "api_version"
)

// Source loads a tenant's client configuration: Dir/<tenant>/<file>, or
// environment variables SF_<TENANT>_TOKEN_URL, SF_<TENANT>_CLIENT_ID,
// SF_<TENANT>_CLIENT_SECRET, SF_<TENANT>_USERNAME, SF_<TENANT>_JWT_KEY_FILE,
// SF_<TENANT>_API_VERSION (tenant upper-cased, '-' as '_').
type Source struct {
	Dir    string
	Lookup func(string) (string, bool) // default os.LookupEnv
	// Policy is where every tenant's credentials may go (PolicyFromEnv).
	Policy salesforce.EndpointPolicy
}

// PolicyFromEnv reads the operator's part of the credential-transport rule:
// extra instance host patterns, and the development-only plain-http hosts.
// Every service that calls Salesforce reads it here, so all apply one rule.
func PolicyFromEnv(l *config.Loader) salesforce.EndpointPolicy {
	list := func(name, help string) []string {
		var out []string
		for _, v := range strings.Split(l.String(name, "", help), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	p := salesforce.EndpointPolicy{
		AllowedHosts: list(salesforce.EnvAllowedHosts,
			"extra host patterns (*.example.com or a host) an instance_url may name, comma-separated; the tenant's My Domain and *.my.salesforce.com, *.salesforce.com, *.force.com always are"),
		InsecureHTTPHosts: list(salesforce.EnvInsecureHTTPHosts,
			"DEVELOPMENT ONLY: hosts reachable over plain http with credentials (a dev cluster's sandbox), comma-separated; logged at start"),
	}
	for _, h := range p.AllowedHosts {
		if strings.ContainsAny(h, "/:@ ") || (strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) {
			l.Invalid(salesforce.EnvAllowedHosts, h, "want host names or *.domain patterns")
		}
	}
	for _, h := range p.InsecureHTTPHosts {
		if strings.ContainsAny(h, "/:@* ") {
			l.Invalid(salesforce.EnvInsecureHTTPHosts, h, "want host names (no scheme, port or wildcard)")
		}
	}
	return p
}

// Load returns the tenant's config, or an error wrapping ErrNoCredentials.
func (s Source) Load(tenant string) (salesforce.Config, error) {
	if s.Dir != "" {
		dir := filepath.Join(s.Dir, tenant)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			cfg, err := fromDir(dir)
			cfg.Endpoints = s.Policy
			return cfg, err
		}
	}
	lookup := s.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	prefix := envPrefix(tenant)
	get := func(k string) string { v, _ := lookup(prefix + k); return strings.TrimSpace(v) }
	cfg := salesforce.Config{
		TokenURL:     get("TOKEN_URL"),
		ClientID:     get("CLIENT_ID"),
		ClientSecret: get("CLIENT_SECRET"),
		Username:     get("USERNAME"),
		JWTKeyFile:   get("JWT_KEY_FILE"),
		APIVersion:   get("API_VERSION"),
		Org:          tenant,
		Endpoints:    s.Policy,
	}
	if cfg.TokenURL == "" && cfg.ClientID == "" {
		where := prefix + "* variables"
		if s.Dir != "" {
			where = filepath.Join(s.Dir, tenant) + "/ or " + where
		}
		return salesforce.Config{}, fmt.Errorf("tenant %s: %w (looked in %s)", tenant, ErrNoCredentials, where)
	}
	return cfg, nil
}

// Declared for the configuration reference: Load reads them per tenant,
// not a Loader.
var _ = []string{
	config.Declare(config.Var{Name: "SF_<TENANT>_TOKEN_URL", Help: "a tenant's Salesforce token URL (its My Domain), when it has no Secret under OPTOUT_SF_CREDENTIALS_DIR; <TENANT> is the tenant id upper-cased, - as _"}),
	config.Declare(config.Var{Name: "SF_<TENANT>_CLIENT_ID", Help: "the tenant's connected app client id"}),
	config.Declare(config.Var{Name: "SF_<TENANT>_CLIENT_SECRET", Help: "client-credentials flow: the client secret (never logged)"}),
	config.Declare(config.Var{Name: "SF_<TENANT>_USERNAME", Help: "JWT bearer flow: the user (with SF_<TENANT>_JWT_KEY_FILE)"}),
	config.Declare(config.Var{Name: "SF_<TENANT>_JWT_KEY_FILE", Help: "JWT bearer flow: the private key file"}),
	config.Declare(config.Var{Name: "SF_<TENANT>_API_VERSION", Help: "Salesforce API version, when not the client's default"}),
}

func envPrefix(tenant string) string {
	return "SF_" + strings.ToUpper(strings.ReplaceAll(tenant, "-", "_")) + "_"
}

// Env returns the variables that give tenant client-credentials access, as
// Source reads them (for tests, demos and generated manifests).
func Env(tenant, tokenURL, clientID, clientSecret string) map[string]string {
	p := envPrefix(tenant)
	return map[string]string{p + "TOKEN_URL": tokenURL, p + "CLIENT_ID": clientID, p + "CLIENT_SECRET": clientSecret}
}

func fromDir(dir string) (salesforce.Config, error) {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return strings.TrimSpace(string(b)), err
	}
	var cfg salesforce.Config
	var errs []error
	for name, dst := range map[string]*string{
		FileTokenURL: &cfg.TokenURL, FileClientID: &cfg.ClientID, FileClientSecret: &cfg.ClientSecret,
		FileUsername: &cfg.Username, FileAPIVersion: &cfg.APIVersion,
	} {
		v, err := read(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", filepath.Join(dir, name), err))
		}
		*dst = v
	}
	if _, err := os.Stat(filepath.Join(dir, FileJWTKey)); err == nil {
		cfg.JWTKeyFile = filepath.Join(dir, FileJWTKey)
	}
	cfg.Org = filepath.Base(dir)
	return cfg, errors.Join(errs...)
}

// Client is the part of the Salesforce client the services use.
type Client interface {
	UpdateOptOut(ctx context.Context, updates []salesforce.Update) ([]salesforce.Result, error)
	ReadAndUpdate(ctx context.Context, updates []salesforce.ReadUpdate) ([]salesforce.ReadResult, error)
	Retrieve(ctx context.Context, sobjectType string, ids, fields []string) ([]*salesforce.Record, error)
	CheckOptOutField(ctx context.Context, field string) error

	// The reads of the nightly reconciler.
	Query(ctx context.Context, soql string, opts ...salesforce.QueryOption) iter.Seq2[salesforce.Record, error]
	QueryIDs(ctx context.Context, sobjectType string, fields, ids []string, opts ...salesforce.QueryOption) iter.Seq2[salesforce.Record, error]
	// QueryEmails finds the duplicates of an address (shared/flow/dupes).
	QueryEmails(ctx context.Context, sobjectType string, fields, emails []string, and string, opts ...salesforce.QueryOption) iter.Seq2[salesforce.Record, error]
	BulkQuery(ctx context.Context, soql string, opts salesforce.BulkQueryOptions, fn func(header, row []string) error) (salesforce.BulkResult, error)
	Limits(ctx context.Context) (map[string]salesforce.Limit, error)
	LastAPIUsage() (salesforce.APIUsage, bool)
}

// Pool keeps one client per tenant and rebuilds it when the tenant's
// credentials change (a rotated Secret), checking at most every Refresh.
type Pool struct {
	Source  Source
	Refresh time.Duration
	// Configure adjusts a loaded config (HTTP client, tracer, ...).
	Configure func(*salesforce.Config)
	// New builds a client; default salesforce.New.
	New func(ctx context.Context, cfg salesforce.Config) (Client, error)

	mu      sync.Mutex
	clients map[string]*pooled
}

type pooled struct {
	client  Client
	cfg     salesforce.Config
	checked time.Time
	err     error
}

// Get returns the tenant's client, or an error wrapping ErrNoCredentials or
// saying what is wrong with the configured credentials.
func (p *Pool) Get(ctx context.Context, tenant string) (Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clients == nil {
		p.clients = map[string]*pooled{}
	}
	refresh := p.Refresh
	if refresh <= 0 {
		refresh = 30 * time.Second
	}
	cur := p.clients[tenant]
	if cur != nil && time.Since(cur.checked) < refresh {
		return cur.client, cur.err
	}
	cfg, err := p.Source.Load(tenant)
	if err == nil && p.Configure != nil {
		p.Configure(&cfg)
	}
	if cur != nil && err == nil && cur.err == nil && sameCreds(cur.cfg, cfg) {
		cur.checked = time.Now()
		return cur.client, nil
	}
	next := &pooled{cfg: cfg, checked: time.Now(), err: err}
	if err == nil {
		newClient := p.New
		if newClient == nil {
			newClient = func(ctx context.Context, cfg salesforce.Config) (Client, error) { return salesforce.New(ctx, cfg) }
		}
		next.client, next.err = newClient(ctx, cfg)
		if next.err != nil {
			next.err = fmt.Errorf("tenant %s: salesforce client: %w", tenant, next.err)
		}
	}
	p.clients[tenant] = next
	return next.client, next.err
}

func sameCreds(a, b salesforce.Config) bool {
	return a.TokenURL == b.TokenURL && a.ClientID == b.ClientID && a.ClientSecret == b.ClientSecret &&
		a.Username == b.Username && a.JWTKeyFile == b.JWTKeyFile && a.APIVersion == b.APIVersion
}
