package pubsub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// The sandbox runs as its own process: its Go API would link its copy of
// the generated Pub/Sub API into this test binary next to ours, and the
// protobuf runtime refuses two registrations of eventbus.v1 (see package
// pubsubapi). Everything the tests do to it goes through its control API
// (services/sfsandbox/README.md) and its REST API, as a client would.

var sandboxBin = struct {
	once sync.Once
	path string
	err  error
}{}

// buildSandbox compiles services/sfsandbox once per test binary.
func buildSandbox(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the sandbox binary (not in -short)")
	}
	sandboxBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "pubsub-sfsandbox-")
		if err != nil {
			sandboxBin.err = err
			return
		}
		bin := filepath.Join(dir, "sfsandbox")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/optout-sync/optout-sync/services/sfsandbox").CombinedOutput()
		if err != nil {
			sandboxBin.err = fmt.Errorf("build sfsandbox: %v\n%s", err, out)
			return
		}
		sandboxBin.path = bin
	})
	if sandboxBin.err != nil {
		t.Fatal(sandboxBin.err)
	}
	return sandboxBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sandboxBin.path != "" {
		_ = os.RemoveAll(filepath.Dir(sandboxBin.path))
	}
	os.Exit(code)
}

// Credentials of the sandbox org (test values, not secrets).
const (
	testClientID = "acme-consumer-key"
	testSecret   = "acme-consumer-secret-Zx81"
	ourClient    = "optout-sync-test"
)

// sandbox is one running sfsandbox process with org "acme".
type sandbox struct {
	t          *testing.T
	control    string // http://127.0.0.1:N/_sandbox/orgs/acme
	orgURL     string // the org's origin: token URL and instance URL
	pubsubAddr string
}

var (
	reControl = regexp.MustCompile(`^control API (http://\S+)/_sandbox/orgs$`)
	reOrg     = regexp.MustCompile(`^org acme\s+token URL (http://\S+)/services/oauth2/token `)
	rePubSub  = regexp.MustCompile(`^pubsub API (\S+) `)
)

// startSandbox runs the sandbox until the test ends; behavior is the org's
// behavior block in YAML (indented by six spaces), may be "".
func startSandbox(t *testing.T, behavior string) *sandbox {
	t.Helper()
	bin := buildSandbox(t)
	dir := t.TempDir()
	cfg := "orgs:\n  - name: acme\n    clientId: " + testClientID + "\n    clientSecret: " + testSecret +
		"\n    username: integration@acme.example.com\n    dailyApiLimit: 100000\n    customField: Marketo_Sales_Opt_Out__c\n" +
		"    customFieldInstalled: true\n    customFieldWritable: true\n"
	if behavior != "" {
		cfg += "    behavior:\n" + behavior
	}
	orgs := filepath.Join(dir, "orgs.yaml")
	if err := os.WriteFile(orgs, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--pubsub-listen", "127.0.0.1:0", "--free-org-ports", "--orgs", orgs)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sfsandbox log (tail):\n%s", tail(stderr.String(), 4000))
		}
	})
	sb := &sandbox{t: t}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if m := reControl.FindStringSubmatch(line); m != nil {
				sb.control = m[1] + "/_sandbox/orgs/acme"
			}
			if m := reOrg.FindStringSubmatch(line); m != nil {
				sb.orgURL = m[1]
			}
			if m := rePubSub.FindStringSubmatch(line); m != nil {
				sb.pubsubAddr = m[1]
				close(found) // printed last
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-found:
	case <-time.After(60 * time.Second):
		t.Fatalf("sfsandbox did not print its addresses; log:\n%s", stderr.String())
	}
	if sb.control == "" || sb.orgURL == "" {
		t.Fatalf("sfsandbox addresses incomplete: %+v", sb)
	}
	return sb
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// ctl calls the control API; out (when not nil) receives the JSON answer.
func (sb *sandbox) ctl(method, path string, body any, out any) {
	sb.t.Helper()
	sb.do(method, sb.control+path, "", body, out, nil)
}

// do sends one HTTP request and fails the test on a non-2xx answer.
func (sb *sandbox) do(method, url, token string, body any, out any, header map[string]string) {
	sb.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			sb.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		sb.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sb.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		sb.t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			sb.t.Fatalf("%s %s: decode %s: %v", method, url, data, err)
		}
	}
}

// put creates a record through the control API (a UI-like edit: empty
// changeOrigin) and returns its id.
func (sb *sandbox) put(typ, email string) string {
	sb.t.Helper()
	var rec struct{ Id string }
	sb.ctl("PUT", "/records", map[string]any{"type": typ, "Email": email}, &rec)
	return rec.Id
}

// salesforceClient is the tenant's REST client for the sandbox org; its
// Sforce-Call-Options client is ourClient.
func (sb *sandbox) salesforceClient(t *testing.T) *salesforce.Client {
	t.Helper()
	sf, err := salesforce.New(context.Background(), salesforce.Config{
		TokenURL: sb.orgURL, ClientID: testClientID, ClientSecret: testSecret, CallClient: ourClient, Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sf
}

// client is a Pub/Sub client for the org, plaintext over loopback.
func (sb *sandbox) client(t *testing.T) (*Client, *salesforce.Client) {
	t.Helper()
	sf := sb.salesforceClient(t)
	c, err := New(sf, Config{Addr: sb.pubsubAddr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, sf
}

// latestReplayID is the bus's newest position: a Custom subscription from
// it sees every later change (a Latest one could miss a write made before
// the server read its first request).
func (sb *sandbox) latestReplayID() []byte {
	sb.t.Helper()
	var evs []struct{ ReplayID []byte }
	sb.ctl("GET", "/pubsub/events", nil, &evs)
	if len(evs) == 0 {
		return nil
	}
	return evs[len(evs)-1].ReplayID
}

// allocationUsed is how many events the org delivered in the rolling 24 h.
func (sb *sandbox) allocationUsed() int {
	sb.t.Helper()
	var a struct{ Used, Max int }
	sb.ctl("GET", "/pubsub/allocation", nil, &a)
	return a.Used
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
