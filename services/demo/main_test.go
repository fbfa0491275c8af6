package main

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/optout-sync/optout-sync/shared/platform/config/configtest"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/demo/publisher"
	"github.com/optout-sync/optout-sync/services/demo/stack"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
)

// natsCLIVersion is the CLI README tells publishers to install.
const natsCLIVersion = "github.com/nats-io/natscli/nats@v0.5.0"

// natsCLI finds the real nats CLI (PATH, then Go's bin directory) and
// installs it there when missing, so the test proves the README's command,
// not an imitation of it.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out, err := exec.Command(goBin, "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	// One line each, GOBIN often empty: the default is GOPATH's first entry + /bin.
	lines := strings.Split(string(out), "\n")
	dir := strings.TrimSpace(lines[0])
	if dir == "" && len(lines) > 1 {
		dir = filepath.Join(strings.Split(strings.TrimSpace(lines[1]), string(os.PathListSeparator))[0], "bin")
	}
	p := filepath.Join(dir, "nats")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Logf("installing %s into %s", natsCLIVersion, dir)
	cmd := exec.Command(goBin, "install", natsCLIVersion)
	// Outside the workspace: the CLI's own go.mod decides its dependencies.
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GOBIN="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", natsCLIVersion, err, b)
	}
	return p
}

// embeddedNATS is a JetStream server of the test's own: the demo uses the
// production subjects, which must not meet other tests on the shared server.
func embeddedNATS(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shellWords splits a printed command line the way sh does for what the demo
// prints: words separated by spaces, single quotes taken literally.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestREADMEPublishReachesTheSandboxAndCtrlCDrains runs the demo (the code of
// make demo), pastes each printed `nats pub` line into the real nats CLI,
// and expects the printed record to be opted out in the sandbox, on the
// org's field. Then it stops the demo as Ctrl-C does and expects a clean
// stop: no failed acks or naks, no error logged.
func TestREADMEPublishReachesTheSandboxAndCtrlCDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo on a JetStream server of its own and the nats CLI: skipped under -short; make test runs it")
	}
	natsBin := natsCLI(t)
	url := embeddedNATS(t)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	outR, outW := io.Pipe()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-nats", url, "-sandbox", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-admin-page", "127.0.0.1:0", "-rate", "200", "-records", "400", "-latency", "100ms"}, outW, &logs)
		_ = outW.Close()
		done <- err
	}()

	// Read the start-up text until the demo says it is running; keep draining
	// its progress lines afterwards so it never blocks on stdout.
	var pubs, curls []string
	var adminLine string
	var printed strings.Builder
	sc := bufio.NewScanner(outR)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		printed.WriteString(line + "\n")
		switch {
		case strings.HasPrefix(line, "nats pub "):
			pubs = append(pubs, line)
		case strings.HasPrefix(line, "curl -s "):
			curls = append(curls, strings.TrimPrefix(line, "curl -s "))
		case strings.HasPrefix(line, "admin page "):
			adminLine = line
		}
		if strings.HasSuffix(line, "Ctrl-C to stop") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	if len(pubs) != len(tenants) || len(curls) != len(tenants) {
		t.Fatalf("want a nats pub and a record URL per org (%d), got %d and %d; demo printed:\n%s\nlogs:\n%s",
			len(tenants), len(pubs), len(curls), printed.String(), logs.String())
	}
	if !strings.Contains(printed.String(), "person show acme ") {
		t.Errorf("no optoutctl person show line for acme:\n%s", printed.String())
	}
	signIn(t, adminLine)

	fields := map[string]string{"acme": "CustomOptOut", "globex": "HasOptedOutOfEmail"}
	for i, line := range pubs {
		words := shellWords(t, line)
		tenant := strings.TrimPrefix(words[2], "optout.v1.events.")
		want := fields[tenant]
		if want == "" {
			t.Fatalf("line %q publishes to %s, not to a demo org's subject", line, words[2])
		}
		before := record(t, curls[i])
		if before[want] == true {
			t.Fatalf("%s: record %v is already opted out before the publish", tenant, before["Id"])
		}
		// The printed line, unchanged, pointed at the test's server.
		cmd := exec.Command(natsBin, append([]string{"-s", url}, words[1:]...)...)
		cmd.Env = append(os.Environ(), "NATS_CONTEXT=") // a developer's nats context must not redirect it
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, b)
		}
		deadline := time.Now().Add(30 * time.Second)
		for record(t, curls[i])[want] != true {
			if time.Now().After(deadline) {
				t.Fatalf("%s: record %v never got %s=true; logs:\n%s", tenant, before["Id"], want, logs.String())
			}
			select {
			case err := <-done:
				t.Fatalf("the demo stopped: %v\n%s", err, logs.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	// Stop while the demo's own publisher keeps batches in flight (the
	// sandbox answers in 100 ms), as a developer's Ctrl-C does.
	stop() // what Ctrl-C does: main's signal.NotifyContext cancels run's ctx
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30s of Ctrl-C")
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l == "" {
			continue
		}
		if strings.Contains(l, "nak failed") || strings.Contains(l, "ack failed") || strings.Contains(l, `"level":"error"`) ||
			strings.Contains(l, "connection closed") || strings.Contains(l, "nats disconnected") {
			t.Errorf("unclean shutdown: %s", l)
		}
	}
}

// record reads a sandbox record through the URL the demo printed.
func record(t *testing.T, url string) map[string]any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return m
}

// TestNoSecretInOutput runs the real demo with each secret-bearing, malformed
// value of the variables it reads (NATS_URL, the email-hash key, OTEL_*) and
// scans what it prints (issue 20).
func TestNoSecretInOutput(t *testing.T) {
	if os.Getenv("DEMO_MAIN") == "1" {
		os.Args = []string{"demo", "-sandbox", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-admin-page", "127.0.0.1:0", "-rate", "0", "-records", "10"}
		main()
		return
	}
	if testing.Short() {
		t.Skip("runs the whole demo once per case, each starting its embedded NATS server: not in the fast tier (-short)")
	}
	var cases []configtest.Case
	for _, c := range configtest.Cases(t, configtest.ClosedNATS(t)) {
		if strings.HasPrefix(c.Name, "NATS_URL") || strings.HasPrefix(c.Name, "OPTOUT_EMAIL_HASH_KEY") || strings.HasPrefix(c.Name, "OTEL") {
			cases = append(cases, c)
		}
	}
	configtest.Scan(t, cases, func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNoSecretInOutput$")
		cmd.Env = []string{"DEMO_MAIN=1"}
		return cmd
	})
}

// signIn follows the demo's "admin page <url> : sign in as "<user>" with the
// password in <file>" line: the page refuses a wrong password and shows the
// demo's tenants to the printed login. The password itself is not printed.
func signIn(t *testing.T, line string) {
	t.Helper()
	m := regexp.MustCompile(`^admin page (http://\S+/admin/) : sign in as "([^"]+)" with the password in (\S+)$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no admin page line with a URL and how to sign in; got %q", line)
	}
	pageURL, user, file := m[1], m[2], m[3]
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	password := strings.TrimSpace(string(b))
	if strings.Contains(line, password) {
		t.Error("the admin password is printed")
	}
	get := func(pw string) (int, string) {
		req, _ := http.NewRequest("GET", pageURL, nil)
		req.SetBasicAuth(user, pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get(password + "x"); code != http.StatusUnauthorized {
		t.Errorf("a wrong password: %d, want 401", code)
	}
	code, body := get(password)
	if code != http.StatusOK {
		t.Fatalf("signing in as the demo says: %d\n%s", code, body)
	}
	for _, tn := range tenants {
		if !strings.Contains(body, `<a href="/admin/tenants/`+tn+`">`+tn+`</a>`) {
			t.Errorf("the admin page does not list tenant %s:\n%s", tn, body)
		}
	}
}

// TestProgressLineAddsUp publishes opt-outs for a few persons, so most are
// repeats, with some lacking a Salesforce id and some malformed, and waits
// until the progress line's parts add up to what was published: nothing
// in flight, every repeat shown as already opted out, one write per person.
func TestProgressLineAddsUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		NATSURL: embeddedNATS(t), SandboxListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", PageListen: "127.0.0.1:0",
		Tenants: tenants, RecordsPerOrg: 10, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub := &publisher.Publisher{
		Pub: natsx.Publisher{JS: s.Pusher.Service.JS, Topology: s.Topology}, Tenants: tenants,
		Records: map[string][]sandbox.Record{}, NoIDShare: 0.1, InvalidShare: 0.1,
	}
	for _, tn := range tenants {
		pub.Records[tn] = s.Sandbox.Org(tn).Records()
	}
	since, err := eventsStored(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Pusher.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("pusher: %v", err)
		}
	}()

	const published = 300
	for range published {
		if err := pub.PublishOne(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var last tally
	deadline := time.Now().Add(time.Minute)
	for {
		if last, err = count(ctx, s, pub, since); err != nil {
			t.Fatal(err)
		}
		if last.InFlight() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the parts never added up to what was published: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Log(last)
	if last.Published != published {
		t.Errorf("published %d, want %d", last.Published, published)
	}
	// 20 persons and 300 opt-outs: every part is there.
	if last.AlreadyOptedOut == 0 || last.Parked == 0 || last.DeadLettered == 0 || last.Pushed == 0 {
		t.Errorf("a part is missing: %s", last)
	}
	// One write per person, whatever the repeats.
	written := 0
	for _, tn := range tenants {
		for _, r := range s.Sandbox.Org(tn).Records() {
			if r.HasOptedOutOfEmail || r.CustomOptOut {
				written++
			}
		}
	}
	if last.Pushed != int64(written) {
		t.Errorf("pushed %d, but %d records are opted out in the sandbox", last.Pushed, written)
	}
	want := fmt.Sprintf("published %6d = pushed %6d + already opted out %5d + parked %4d + dead-lettered %4d + in flight    0",
		last.Published, last.Pushed, last.AlreadyOptedOut, last.Parked, last.DeadLettered)
	if got := last.String(); got != want {
		t.Errorf("progress line\n%s\nwant\n%s", got, want)
	}
}
