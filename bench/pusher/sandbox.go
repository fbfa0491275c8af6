package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/optout-sync/optout-sync/internal/harness"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// sandboxProc is the sfsandbox binary with one org per tenant, driven
// through its control API (/_sandbox/).
type sandboxProc struct {
	*harness.Proc
	url  string // control API origin
	orgs map[string]string
}

// orgSpec is one org of the sandbox's configuration; JSON is YAML, so the
// binary reads it as its orgs file.
type orgSpec struct {
	Name                 string   `json:"name"`
	ClientID             string   `json:"clientId"`
	ClientSecret         string   `json:"clientSecret"`
	APIVersions          []string `json:"apiVersions"`
	DailyAPILimit        int      `json:"dailyApiLimit"`
	CustomField          string   `json:"customField"`
	CustomFieldInstalled bool     `json:"customFieldInstalled"`
	CustomFieldWritable  bool     `json:"customFieldWritable"`
}

// startSandbox runs the sandbox with an org per tenant; sales lists the
// tenants whose sales opt-out field is installed and writable.
func startSandbox(ctx context.Context, bin, dir string, tenants []string, sales map[string]bool) (*sandboxProc, error) {
	var cfg struct {
		Orgs []orgSpec `json:"orgs"`
	}
	for _, t := range tenants {
		cfg.Orgs = append(cfg.Orgs, orgSpec{Name: t, ClientID: t + "-client", ClientSecret: t + "-secret",
			APIVersions: []string{"62.0"}, DailyAPILimit: 100_000_000, CustomField: tenant.DefaultCustomField,
			CustomFieldInstalled: sales[t], CustomFieldWritable: sales[t]})
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "orgs.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc("sfsandbox", dir, bin, []string{"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-orgs", path, "-free-org-ports"}, nil)
	if err != nil {
		return nil, err
	}
	s := &sandboxProc{Proc: p, url: fmt.Sprintf("http://127.0.0.1:%d", port), orgs: map[string]string{}}
	if err := harness.WaitHTTP(ctx, p, s.url+"/_sandbox/orgs", 30*time.Second); err != nil {
		_ = p.Stop(time.Second)
		return nil, err
	}
	var infos []struct {
		Name    string `json:"name"`
		BaseURL string `json:"baseUrl"`
	}
	if err := s.do(ctx, http.MethodGet, "/_sandbox/orgs", nil, &infos); err != nil {
		_ = p.Stop(time.Second)
		return nil, err
	}
	for _, o := range infos {
		s.orgs[o.Name] = o.BaseURL
	}
	return s, nil
}

func (s *sandboxProc) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, body)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("sandbox %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// seed adds n records (half Contacts, half Leads) to org and returns them.
func (s *sandboxProc) seed(ctx context.Context, org string, n int) ([]sandbox.Record, error) {
	before, err := s.records(ctx, org)
	if err != nil {
		return nil, err
	}
	if err := s.do(ctx, http.MethodPost, "/_sandbox/orgs/"+org+"/seed", map[string]int{"contacts": n / 2, "leads": n - n/2}, nil); err != nil {
		return nil, err
	}
	all, err := s.records(ctx, org)
	if err != nil {
		return nil, err
	}
	old := map[string]bool{}
	for _, r := range before {
		old[r.ID] = true
	}
	var out []sandbox.Record
	for _, r := range all {
		if !old[r.ID] {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *sandboxProc) records(ctx context.Context, org string) ([]sandbox.Record, error) {
	var page struct {
		Records []struct {
			ID   string `json:"Id"`
			Type string `json:"type"`
		} `json:"records"`
	}
	if err := s.do(ctx, http.MethodGet, "/_sandbox/orgs/"+org+"/records?limit=10000000", nil, &page); err != nil {
		return nil, err
	}
	out := make([]sandbox.Record, len(page.Records))
	for i, r := range page.Records {
		out[i] = sandbox.Record{ID: r.ID, Type: r.Type}
	}
	return out, nil
}

func (s *sandboxProc) setLatency(ctx context.Context, org string, d time.Duration) error {
	return s.do(ctx, http.MethodPut, "/_sandbox/orgs/"+org+"/latency", map[string]string{"latency": d.String()}, nil)
}

// callCounts is what an org's call log says: write calls (sObject
// Collections updates), reads (Collections retrieves) and every call counted
// against the API allowance (tokens included).
type callCounts struct {
	Writes, Reads, API int
}

func (c *callCounts) add(o callCounts) { c.Writes += o.Writes; c.Reads += o.Reads; c.API += o.API }

func (s *sandboxProc) calls(ctx context.Context, org string) (callCounts, error) {
	var log struct {
		APICalls int `json:"apiCalls"`
		Calls    []struct {
			Route string `json:"route"`
		} `json:"calls"`
	}
	if err := s.do(ctx, http.MethodGet, "/_sandbox/orgs/"+org+"/calls", nil, &log); err != nil {
		return callCounts{}, err
	}
	c := callCounts{API: log.APICalls}
	for _, call := range log.Calls {
		switch call.Route {
		case sandbox.RouteCollectionsUpdate, sandbox.RouteComposite: // the sales field: read and write in one
			c.Writes++
		case sandbox.RouteCollectionsGet:
			c.Reads++
		}
	}
	return c, nil
}

// writeCreds gives the pusher each tenant's Secret, as files.
func writeCreds(dir string, orgs map[string]string) error {
	for t, url := range orgs {
		d := filepath.Join(dir, t)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		for name, v := range map[string]string{"token_url": url, "client_id": t + "-client", "client_secret": t + "-secret"} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(v), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}
