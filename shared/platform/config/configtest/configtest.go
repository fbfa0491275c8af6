// Package configtest checks that a real binary never prints a configured
// secret: it runs the binary once per secret-bearing, malformed setting and
// scans stdout and stderr (issue 20).
package configtest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// Secret is the value every case hides somewhere; it must never be printed.
const Secret = "Sup3rSecretValue-4b1d"

// Case is one malformed setting that carries Secret.
type Case struct {
	Name string
	Env  map[string]string
}

// Cases are every configuration value that can hold a secret, each made
// malformed (or unusable) so the binary reports on it. Files get content
// that holds the secret and does not parse. closedNATS is a NATS URL that
// refuses connections (a loopback port with no listener).
func Cases(t *testing.T, closedNATS string) []Case {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return []Case{
		// The finding 4: a typo in the port, host as in a cluster or an IP.
		{"NATS_URL bad port", map[string]string{"NATS_URL": "nats://optout:" + Secret + "@nats:42x22"}},
		{"NATS_URL bad port IP", map[string]string{"NATS_URL": "nats://optout:" + Secret + "@127.0.0.1:42x22"}},
		{"NATS_URL bad port domain", map[string]string{"NATS_URL": "nats://optout:" + Secret + "@nats.invalid:42x22"}},
		{"NATS_URL bad host list", map[string]string{"NATS_URL": "nats://optout:" + Secret + "@127.0.0.1:1,nats://x:" + Secret + "@[::1"}},
		{"NATS_URL refused", map[string]string{"NATS_URL": strings.Replace(closedNATS, "://", "://optout:"+Secret+"@", 1)}},
		{"NATS_PASSWORD", map[string]string{"NATS_URL": closedNATS, "NATS_USER": "optout", "NATS_PASSWORD": Secret}},
		{"NATS_TOKEN with NATS_USER", map[string]string{"NATS_URL": closedNATS, "NATS_USER": "optout", "NATS_TOKEN": Secret}},
		{"NATS_TOKEN refused", map[string]string{"NATS_URL": closedNATS, "NATS_TOKEN": Secret}},
		{"NATS_NKEY_SEED_FILE", map[string]string{"NATS_URL": closedNATS, "NATS_NKEY_SEED_FILE": file("seed", "SU"+Secret+"\n")}},
		{"NATS_CREDS_FILE", map[string]string{"NATS_URL": closedNATS, "NATS_CREDS_FILE": file("creds", "-----BEGIN NATS USER JWT-----\n"+Secret+"\n")}},
		{"OPTOUT_REDIS_URL", map[string]string{"NATS_URL": closedNATS, "OPTOUT_REDIS_URL": "redis://optout:" + Secret + "@redis.invalid:63x79/0"}},
		{"OPTOUT_ADMIN_TOKEN short", map[string]string{"NATS_URL": closedNATS, "OPTOUT_ADMIN_TOKEN": Secret[:8]}},
		{"OPTOUT_ADMIN_TOKEN with missing file", map[string]string{"NATS_URL": closedNATS, "OPTOUT_ADMIN_TOKEN": Secret, "OPTOUT_ADMIN_TOKEN_FILE": filepath.Join(dir, Secret)}},
		{"OPTOUT_ADMIN_USERS_FILE", map[string]string{"NATS_URL": closedNATS, "OPTOUT_ADMIN_USERS_FILE": file("users", "alice "+Secret+"\n")}},
		{"OPTOUT_EMAIL_HASH_KEY short", map[string]string{"NATS_URL": closedNATS, "OPTOUT_EMAIL_HASH_KEY": Secret[:6]}},
		{"OPTOUT_EMAIL_HASH_KEY and file", map[string]string{"NATS_URL": closedNATS, "OPTOUT_EMAIL_HASH_KEY": Secret, "OPTOUT_EMAIL_HASH_KEY_FILE": file("hash", Secret)}},
		{"OTEL endpoint", map[string]string{"NATS_URL": closedNATS, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:" + Secret + "@otel.invalid:43x17"}},
		{"OTEL headers", map[string]string{"NATS_URL": closedNATS, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20" + Secret + "%zz"}},
		{"OPTOUT_SF_ALLOWED_HOSTS with user info", map[string]string{"NATS_URL": closedNATS, "OPTOUT_SF_ALLOWED_HOSTS": "https://sf:" + Secret + "@x.invalid"}},
	}
}

// ClosedNATS is a NATS URL on a loopback port nothing listens on.
func ClosedNATS(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "nats://" + addr
}

// Scan runs cmd (built fresh per case by newCmd, environment set by Scan)
// for each case and fails when Secret appears in its output. A binary that
// does not stop by itself within a few seconds (it found nothing to refuse)
// is stopped; its output is scanned all the same.
func Scan(t *testing.T, cases []Case, newCmd func(ctx context.Context) *exec.Cmd) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			cmd := newCmd(ctx)
			env := []string{"NATS_CONNECT_TIMEOUT=500ms", "OPTOUT_ADMIN_ADDR=127.0.0.1:0"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "OPTOUT_") && !strings.HasPrefix(kv, "OTEL_") {
					env = append(env, kv)
				}
			}
			for k, v := range c.Env {
				env = append(env, k+"="+v)
			}
			cmd.Env = append(cmd.Env, env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			_ = cmd.Run()
			if out.Len() == 0 {
				t.Fatalf("no output at all: the case tested nothing")
			}
			if strings.Contains(out.String(), Secret) || strings.Contains(out.String(), Secret[:6]) {
				t.Errorf("the secret is in the output:\n%s", out.String())
			}
		})
	}
}

// BadConfig runs the test binary's own main (the test named run, which calls
// main when flag is set in its environment) with env added, and returns what
// it printed on stderr once it exited with status 2, the configuration
// error's status; any other exit fails the test.
func BadConfig(t *testing.T, run, flag string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$")
	cmd.Env = append(append(os.Environ(), flag+"=1"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v; want status 2 (stderr %q)", err, stderr.String())
	}
	return strings.TrimSpace(stderr.String())
}

// Documented fails the test for each variable load declares, with its
// defaults, that the generated reference (docs/configuration.md at path)
// does not name: a service's variables can then not drift from the docs.
func Documented(t *testing.T, path string, load func(*config.Loader)) {
	t.Helper()
	ref, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l := config.FromMap(nil)
	load(l)
	if err := l.Err(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
	for _, v := range l.Vars() {
		if !strings.Contains(string(ref), "`"+v.Name+"`") {
			t.Errorf("%s does not document %s (%s): run make docs", path, v.Name, v.Help)
		}
	}
}
