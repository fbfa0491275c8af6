package harness_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/internal/harness"
)

func sh(t *testing.T, name, script string) *harness.Proc {
	t.Helper()
	bin, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	p := &harness.Proc{Name: name, Bin: bin, Args: []string{"-c", script}, Log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(p.Kill)
	return p
}

func TestProcLogsAcrossRestartsAndReportsItsExit(t *testing.T) {
	p := sh(t, "echoer", "echo hello; exit 3")
	for range 2 {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		for p.Running() {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got := strings.Count(p.Tail(100), "hello"); got != 2 {
		t.Errorf("log has %d hellos across two runs, want 2:\n%s", got, p.Tail(100))
	}
	err := p.Exited()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "hello") {
		t.Errorf("Exited() = %v; want the exit status and the log's tail", err)
	}
}

func TestStopEndsAProcessThatHonoursSIGTERM(t *testing.T) {
	p := sh(t, "sleeper", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Tail(5), "ready") { // the trap is set
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start of a running process succeeded")
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if p.Running() || p.ExitStatus() != "exit status 0" {
		t.Fatalf("after Stop: running %t, status %s", p.Running(), p.ExitStatus())
	}
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	p := sh(t, "stubborn", "trap '' TERM; echo ready; while :; do sleep 0.05; done")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Tail(5), "ready") { // the trap is set
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop = %v; want it killed", err)
	}
	if p.Running() {
		t.Fatal("still running after Stop")
	}
}

func TestWaitHTTPFailsEarlyWhenTheProcessExits(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := sh(t, "quitter", "echo no server here; exit 1")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitHTTP(context.Background(), p, fmt.Sprintf("http://127.0.0.1:%d/", port), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "no server here") {
		t.Fatalf("WaitHTTP = %v; want the exit with the log's tail", err)
	}
}

func TestWaitHTTPReturnsOnceTheURLAnswers200(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	p := sh(t, "idle", "sleep 30")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitHTTP(context.Background(), p, srv.URL, time.Minute); err != nil {
		t.Fatal(err)
	}
}
