// Package sandboxproc runs the Salesforce sandbox (services/sfsandbox) as
// its own process for tests that speak the Pub/Sub API with our client: the
// sandbox's Go API would link its copy of the generated eventbus.v1 code
// next to the client's, and the protobuf runtime refuses two registrations
// (see shared/adapter/pubsub/pubsubapi). Everything a test does to it goes
// through its control API and its REST and gRPC APIs, as a client would.
package sandboxproc

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

// Credentials of the org "acme" Start configures (test values, not secrets).
const (
	Org          = "acme"
	ClientID     = "acme-consumer-key"
	ClientSecret = "acme-consumer-secret-Zx81"
	CustomField  = "Marketo_Sales_Opt_Out__c"
)

var bin = struct {
	once sync.Once
	dir  string
	path string
	err  error
}{}

// build compiles services/sfsandbox once per test binary.
func build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the sandbox binary (not in -short)")
	}
	bin.once.Do(func() {
		dir, err := os.MkdirTemp("", "sfsandbox-bin-")
		if err != nil {
			bin.err = err
			return
		}
		p := filepath.Join(dir, "sfsandbox")
		out, err := exec.Command("go", "build", "-o", p, "github.com/optout-sync/optout-sync/services/sfsandbox").CombinedOutput()
		if err != nil {
			bin.err = fmt.Errorf("build sfsandbox: %v\n%s", err, out)
			return
		}
		bin.dir, bin.path = dir, p
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if bin.dir != "" {
		_ = os.RemoveAll(bin.dir)
	}
}

// Sandbox is one running sfsandbox process with org "acme".
type Sandbox struct {
	t          testing.TB
	Control    string // http://127.0.0.1:N/_sandbox/orgs/acme
	OrgURL     string // the org's origin: token URL and instance URL
	PubSubAddr string
}

var (
	reControl = regexp.MustCompile(`^control API (http://\S+)/_sandbox/orgs$`)
	reOrg     = regexp.MustCompile(`^org acme\s+token URL (http://\S+)/services/oauth2/token `)
	rePubSub  = regexp.MustCompile(`^pubsub API (\S+) `)
)

// Start runs the sandbox until the test ends; behavior is the org's
// behavior block in YAML (indented by six spaces), may be "".
func Start(t testing.TB, behavior string) *Sandbox {
	t.Helper()
	path := build(t)
	dir := t.TempDir()
	cfg := "orgs:\n  - name: " + Org + "\n    clientId: " + ClientID + "\n    clientSecret: " + ClientSecret +
		"\n    username: integration@acme.example.com\n    dailyApiLimit: 100000\n    customField: " + CustomField + "\n" +
		"    customFieldInstalled: true\n    customFieldWritable: true\n"
	if behavior != "" {
		cfg += "    behavior:\n" + behavior
	}
	orgs := filepath.Join(dir, "orgs.yaml")
	if err := os.WriteFile(orgs, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--listen", "127.0.0.1:0", "--pubsub-listen", "127.0.0.1:0", "--free-org-ports", "--orgs", orgs)
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
	sb := &Sandbox{t: t}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if m := reControl.FindStringSubmatch(line); m != nil {
				sb.Control = m[1] + "/_sandbox/orgs/" + Org
			}
			if m := reOrg.FindStringSubmatch(line); m != nil {
				sb.OrgURL = m[1]
			}
			if m := rePubSub.FindStringSubmatch(line); m != nil {
				sb.PubSubAddr = m[1]
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
	if sb.Control == "" || sb.OrgURL == "" {
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

// Ctl calls the control API; out (when not nil) receives the JSON answer.
func (sb *Sandbox) Ctl(method, path string, body any, out any) {
	sb.t.Helper()
	sb.Do(method, sb.Control+path, "", body, out, nil)
}

// Do sends one HTTP request and fails the test on a non-2xx answer.
func (sb *Sandbox) Do(method, url, token string, body any, out any, header map[string]string) {
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

// Put creates a record through the control API (a UI-like edit: empty
// changeOrigin) and returns its id.
func (sb *Sandbox) Put(typ, email string) string {
	sb.t.Helper()
	var rec struct{ Id string }
	sb.Ctl("PUT", "/records", map[string]any{"type": typ, "Email": email}, &rec)
	return rec.Id
}

// SalesforceClient is a REST client of the org whose writes carry
// Sforce-Call-Options client=callClient.
func (sb *Sandbox) SalesforceClient(callClient string) *salesforce.Client {
	sb.t.Helper()
	sf, err := salesforce.New(context.Background(), salesforce.Config{
		TokenURL: sb.OrgURL, ClientID: ClientID, ClientSecret: ClientSecret, CallClient: callClient, Timeout: 30 * time.Second,
	})
	if err != nil {
		sb.t.Fatal(err)
	}
	return sf
}

// LatestReplayID is the bus's newest position (nil when empty).
func (sb *Sandbox) LatestReplayID() []byte {
	sb.t.Helper()
	var evs []struct{ ReplayID []byte }
	sb.Ctl("GET", "/pubsub/events", nil, &evs)
	if len(evs) == 0 {
		return nil
	}
	return evs[len(evs)-1].ReplayID
}

// AllocationUsed is how many events the org delivered in the rolling 24 h.
func (sb *Sandbox) AllocationUsed() int {
	sb.t.Helper()
	var a struct{ Used, Max int }
	sb.Ctl("GET", "/pubsub/allocation", nil, &a)
	return a.Used
}
