package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// TestMain lets the shells' tests run this test binary as optoutctl: with
// OPTOUTCTL_AS_BINARY=1 it is the real main, arguments and all.
func TestMain(m *testing.M) {
	if os.Getenv("OPTOUTCTL_AS_BINARY") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// binary puts an "optoutctl" on a PATH of its own (this test binary as
// main) and returns the environment to run it with: the stack's NATS and
// namespace, HOME in a temporary directory.
func binary(t *testing.T, s *testkit.Stack) []string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nOPTOUTCTL_AS_BINARY=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "optoutctl"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + dir + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "OTEL_SDK_DISABLED=true"}
	for k, v := range s.Env.Map() {
		env = append(env, k+"="+v)
	}
	return env
}

// shell runs script in a real shell, skipping when the shell is not
// installed (scripts/test-prereqs installs bash-completion, zsh and fish).
func shell(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (scripts/test-prereqs installs it)", name)
	}
	cmd := exec.CommandContext(context.Background(), name, args...)
	cmd.Env = env
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("%s: %v\n%s\n%s", name, err, out, exit.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// firstFields is each line's first word (a completion, its description
// dropped), blank lines left out.
func firstFields(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return strings.Join(out, " ")
}

// TestShellsCompleteTenantNames loads each shell's script, made by the real
// binary, into the real shell, and has bash and fish complete tenant names
// from this test's own tenant settings in NATS (the shell runs optoutctl
// __complete, as when the operator presses TAB); zsh defines its completion
// function.
func TestShellsCompleteTenantNames(t *testing.T) {
	s := testkit.New(t)
	on := tenant.Default("acme")
	on.SyncEnabled = true
	s.PutSettings(on)
	s.PutSettings(tenant.Default("globex"))
	env := binary(t, s)

	t.Run("bash", func(t *testing.T) {
		complete := func(line string) string {
			return firstFields(shell(t, env, "bash", "-c", `source /usr/share/bash-completion/bash_completion 2>/dev/null
source <(optoutctl completion bash)
COMP_LINE="`+line+`"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"; [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
__start_optoutctl optoutctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"`))
		}
		if got := complete("optoutctl tenant show "); got != "acme globex" {
			t.Errorf("optoutctl tenant show <TAB>: %q", got)
		}
		if got := complete("optoutctl dlq list gl"); got != "globex" {
			t.Errorf("optoutctl dlq list gl<TAB>: %q", got)
		}
		if got := complete("optoutctl ten"); got != "tenant" {
			t.Errorf("optoutctl ten<TAB>: %q", got)
		}
	})
	t.Run("fish", func(t *testing.T) {
		complete := func(line string) string {
			return shell(t, env, "fish", "--no-config", "-c", `optoutctl completion fish | source; complete -C "`+line+`"`)
		}
		if got := complete("optoutctl reconcile history "); got != "acme\tsync on\nglobex\tsync off\n" {
			t.Errorf("optoutctl reconcile history <TAB>: %q", got)
		}
		if got := firstFields(complete("optoutctl tenant set acme --field ")); got != "email-opt-out sales-opt-out" {
			t.Errorf("--field <TAB>: %q", got)
		}
	})
	t.Run("zsh", func(t *testing.T) {
		got := shell(t, env, "zsh", "-f", "-c", `autoload -U compinit; compinit -u -d "$HOME/.zcompdump"; source <(optoutctl completion zsh); whence -w _optoutctl`)
		if got != "_optoutctl: function\n" {
			t.Errorf("zsh has no _optoutctl after loading the script: %q", got)
		}
	})
}

// TestProgressBarOnlyAtATerminal runs the real binary, which asks the
// operating system whether stdout and stderr are terminals: under a
// pseudo-terminal (script(1)) dlq replay draws its bar; with pipes, as in
// scripts, it does not, and the output is the same.
func TestProgressBarOnlyAtATerminal(t *testing.T) {
	s := testkit.New(t)
	env := binary(t, s)
	dl := deadletter.DeadLetterer{JS: s.Prov.JS, Topology: s.Topo}
	for range 3 {
		if err := dl.Write(s.Ctx, deadletter.Letter{Tenant: "acme", Subject: s.Topo.EventsSubject("acme"), Data: []byte("not an event"),
			Cause: errors.New("not an event"), Code: "undecodable", Class: "invalid"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed (util-linux)")
	}
	replay := "optoutctl dlq replay acme 1 2 3"
	piped := exec.Command("sh", "-c", replay)
	piped.Env = env
	var stderr strings.Builder
	piped.Stderr = &stderr
	out, err := piped.Output()
	if code := piped.ProcessState.ExitCode(); code != 4 {
		t.Fatalf("piped: exit %d (%v)\n%s%s", code, err, out, stderr.String())
	}
	if strings.Contains(stderr.String(), "replaying") || !strings.HasPrefix(stderr.String(), "optoutctl: 3 dead letters are still invalid") {
		t.Errorf("piped: stderr %q", stderr.String())
	}
	atTerminal := shell(t, env, "script", "-qec", replay+"; echo exit $?", "/dev/null")
	if !strings.Contains(atTerminal, "replaying dead letters of acme") || !strings.Contains(atTerminal, "(0/3, ") ||
		!strings.Contains(atTerminal, "3 dead letters are still invalid") || !strings.Contains(atTerminal, "exit 4") {
		t.Errorf("at a terminal:\n%q", atTerminal)
	}
	for _, row := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.Contains(atTerminal, strings.TrimSpace(row)) {
			t.Errorf("at a terminal the row %q is missing:\n%q", row, atTerminal)
		}
	}
}
