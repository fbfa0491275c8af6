// Package testkit stands up what optoutctl's tests run against: the real
// NATS server in a fresh namespace, the Salesforce sandbox with tenants'
// credentials, and, when asked, a real pusher replica and a real reconciler
// replica. It runs optoutctl in process and compares its output with golden
// files.
package testkit

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/internal/teststack/pushstack"
	"github.com/optout-sync/optout-sync/internal/teststack/reconstack"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/root"
	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// T0 is optoutctl's clock in tests, and events' occurred_at are set around
// it, so every age it prints is exact. It lies in the past, so the pusher
// (on the real clock) accepts the events.
var T0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Orgs of the sandbox. acme has the sales opt-out field; globex does not;
// initech has no credentials at all.
var Orgs = []sandbox.OrgConfig{
	{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", DailyAPILimit: 100000, CustomFieldInstalled: true, CustomFieldWritable: true},
	{Name: "globex", ClientID: "globex-id", ClientSecret: "globex-secret", DailyAPILimit: 100000},
}

// Stack is one test's system: the shared test stack (internal/teststack)
// with what optoutctl's tests add.
type Stack struct {
	*teststack.Stack
	T *testing.T
	// Cache is the running pusher's view of the settings (nil before
	// StartPusher): tests wait on it to know a change has reached the pusher.
	Cache *tenant.Cache
	// recon is what the reconciler replicas share (nil before
	// StartReconciler).
	recon *reconstack.Stack
	// Terminal makes the runs see a terminal on stdout and stderr (their
	// output still goes to buffers), as an operator at a shell would.
	Terminal bool
}

// New provisions a namespace, starts the sandbox and sets the credentials
// and the variables optoutctl reads (Env, changeable during the test).
func New(t *testing.T) *Stack {
	t.Helper()
	st := teststack.New(t, Orgs, teststack.Options{Within: 80 * time.Second, AckWait: 2 * time.Second})
	st.Env.Set("NATS_URL", natstest.URL())
	st.Env.Set("OPTOUT_NAMESPACE", st.Topo.Namespace)
	// No Secrets directory: credentials come from the SF_<TENANT>_* variables.
	st.Env.Set("OPTOUT_SF_CREDENTIALS_DIR", "/nonexistent/optout-salesforce")
	return &Stack{Stack: st, T: t}
}

// PusherConfig is tuned so failures and retries take milliseconds; the
// claim and sweep timings stay the defaults (one replica runs).
func PusherConfig() push.Config {
	c, d := pushstack.FastConfig(), push.DefaultConfig()
	c.SweepInterval, c.ClaimTTL = d.SweepInterval, d.ClaimTTL
	return c
}

// StartPusher runs a real pusher replica until the test ends or stop.
func (s *Stack) StartPusher() (stop func()) {
	s.T.Helper()
	r := pushstack.Start(s.Stack, PusherConfig(), pushstack.Options{ErrorsOnly: true})
	s.Cache = r.Cache
	return r.Stop
}

// Seed adds a Contact or Lead to an org and returns its id.
func (s *Stack) Seed(org, typ, email string) string {
	return s.Sandbox.Org(org).Put(sandbox.Record{Type: typ, Email: email}).ID
}

// Eventually polls cond until it holds, failing the test after a generous
// deadline (this is a wait, not a timing assertion).
func (s *Stack) Eventually(what string, cond func() bool) {
	s.T.Helper()
	s.Stack.Eventually(what, 20*time.Second, cond)
}

// Result is one run of optoutctl.
type Result struct {
	Args           []string
	Code           int
	Stdout, Stderr string
}

// Run runs optoutctl in process with the stack's environment and clock.
func (s *Stack) Run(args ...string) Result { return s.RunStdin("", args...) }

// RunStdin runs optoutctl with stdin.
func (s *Stack) RunStdin(stdin string, args ...string) Result {
	s.T.Helper()
	var out, errOut bytes.Buffer
	inv := &cli.Invocation{
		Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader(stdin), Env: s.Env.Map(),
		Now:            func() time.Time { return T0 },
		StdoutTerminal: s.Terminal, StderrTerminal: s.Terminal,
	}
	code := cli.Main(s.Ctx, root.Command(inv), args, inv)
	return Result{Args: args, Code: code, Stdout: out.String(), Stderr: errOut.String()}
}

// Expect fails the test unless the run exited with code.
func (r Result) Expect(t *testing.T, code int) Result {
	t.Helper()
	if r.Code != code {
		t.Fatalf("optoutctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, code, r.Stdout, r.Stderr)
	}
	return r
}

// Golden compares the run (command, exit code, stdout, stderr), normalised,
// with testdata/<name>.golden; -update rewrites the file.
func (r Result) Golden(t *testing.T, name string) Result {
	t.Helper()
	var b strings.Builder
	shown := make([]string, len(r.Args))
	for i, a := range r.Args {
		shown[i] = a
		if a == "" || strings.ContainsAny(a, " \"'") {
			shown[i] = strconv.Quote(a)
		}
	}
	fmt.Fprintf(&b, "$ optoutctl %s\nexit %d\n", strings.Join(shown, " "), r.Code)
	if r.Stdout != "" {
		fmt.Fprintf(&b, "--- stdout\n%s", r.Stdout)
	}
	if r.Stderr != "" {
		fmt.Fprintf(&b, "--- stderr\n%s", r.Stderr)
	}
	Golden(t, name, b.String())
	return r
}

// Golden compares normalised text with testdata/<name>.golden.
func Golden(t *testing.T, name, got string) {
	t.Helper()
	got = Normalize(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var (
	humanTime = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`)
	rfcTime   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	traceID   = regexp.MustCompile(`\b[0-9a-f]{32}\b`)
	parent    = regexp.MustCompile(`\b00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\b`)
	eventID   = regexp.MustCompile(`optoutctl-[0-9a-f]{16}`)
	nsLower   = regexp.MustCompile(`\bt[0-9a-f]{8}\b`)
	nsUpper   = regexp.MustCompile(`\bT[0-9A-F]{8}_`)
	port      = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	allowance = regexp.MustCompile(`\d+ of (\d+) requests left`)
	usageJSON = regexp.MustCompile(`"(used|remaining)": \d+`)
)

// Normalize replaces what changes from run to run: wall-clock times (a
// time within two days of now; the fixed times of the test data stay),
// trace ids, generated event ids, the test namespace, ports and the API
// usage the pusher's calls leave.
func Normalize(s string) string {
	now := time.Now()
	recent := func(t time.Time) bool { return t.After(now.Add(-48*time.Hour)) && t.Before(now.Add(48*time.Hour)) }
	s = humanTime.ReplaceAllStringFunc(s, func(m string) string {
		if t, err := time.Parse("2006-01-02 15:04:05 UTC", m); err == nil && recent(t) {
			return "0000-00-00 00:00:00 UTC"
		}
		return m
	})
	s = rfcTime.ReplaceAllStringFunc(s, func(m string) string {
		if t, err := time.Parse(time.RFC3339Nano, m); err == nil && recent(t) {
			return "0000-00-00T00:00:00Z"
		}
		return m
	})
	s = parent.ReplaceAllString(s, "00-"+strings.Repeat("0", 32)+"-"+strings.Repeat("0", 16)+"-01")
	s = traceID.ReplaceAllString(s, strings.Repeat("0", 32))
	s = eventID.ReplaceAllString(s, "optoutctl-0000000000000000")
	s = nsLower.ReplaceAllString(s, "t00000000")
	s = nsUpper.ReplaceAllString(s, "T00000000_")
	s = port.ReplaceAllString(s, "127.0.0.1:PORT")
	s = allowance.ReplaceAllString(s, "N of $1 requests left")
	s = usageJSON.ReplaceAllString(s, `"$1": N`)
	return s
}
