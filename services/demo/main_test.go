package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/optout-sync/optout-sync/shared/config/configtest"
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
		err := run(ctx, []string{"-nats", url, "-sandbox", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-rate", "200", "-records", "400", "-latency", "100ms"}, outW, &logs)
		_ = outW.Close()
		done <- err
	}()

	// Read the start-up text until the demo says it is running; keep draining
	// its progress lines afterwards so it never blocks on stdout.
	var pubs, curls []string
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
		os.Args = []string{"demo", "-sandbox", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-rate", "0", "-records", "10"}
		main()
		return
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
