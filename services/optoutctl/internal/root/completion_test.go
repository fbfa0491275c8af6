package root_test

import (
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// TestCompletionScripts: each shell's script is printed on stdout, names
// optoutctl and asks it for completions (cobra's __complete protocol); a
// shell we do not support is an unknown command (exit 2).
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	for shell, marks := range map[string][]string{
		"bash": {"# bash completion V2 for optoutctl", "complete -o default -F __start_optoutctl optoutctl", "__complete"},
		"zsh":  {"#compdef optoutctl", "compdef _optoutctl optoutctl", "__complete"},
		"fish": {"# fish completion for optoutctl", "complete -c optoutctl", "__complete"},
	} {
		r := s.Run("completion", shell).Expect(t, 0)
		for _, m := range marks {
			if !strings.Contains(r.Stdout, m) {
				t.Errorf("completion %s: no %q in the script:\n%.400s", shell, m, r.Stdout)
			}
		}
		if r.Stderr != "" {
			t.Errorf("completion %s wrote to stderr: %s", shell, r.Stderr)
		}
	}
	s.Run("completion").Expect(t, 2)
	s.Run("completion", "powershell").Expect(t, 2).Golden(t, "completion_unknown_shell")
}

// TestCompletionOfTenantNames: what a shell gets back while the operator
// types (cobra's __complete: one completion a line, tab before its
// description, then ":directive"): tenant names from the tenant settings in
// this test's own NATS buckets, with sync on or off, filtered by what was
// typed; fixed values for flags; nothing but the directive when NATS is not
// there.
func TestCompletionOfTenantNames(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	on := tenant.Default("acme")
	on.SyncEnabled = true
	s.PutSettings(on)
	s.PutSettings(tenant.Default("globex"))
	s.PutSettings(tenant.Default("acme-eu"))

	both := "acme\tsync on\nacme-eu\tsync off\nglobex\tsync off\n:4\n"
	for _, args := range [][]string{
		{"tenant", "show", ""},
		{"tenant", "set", ""},
		{"person", "export", ""},
		{"dlq", "list", ""},
		{"dlq", "replay", ""},
		{"reconcile", "run", ""},
		{"reconcile", "history", ""},
		{"publish", ""},
	} {
		if r := s.Run(append([]string{"__complete"}, args...)...).Expect(t, 0); r.Stdout != both {
			t.Errorf("%v: got\n%s\nwant\n%s", args, r.Stdout, both)
		}
	}
	if r := s.Run("__complete", "reconcile", "status", "ac").Expect(t, 0); r.Stdout != "acme\tsync on\nacme-eu\tsync off\n:4\n" {
		t.Errorf("prefix ac: got\n%s", r.Stdout)
	}
	// Only the first argument is a tenant.
	if r := s.Run("__complete", "person", "show", "acme", "").Expect(t, 0); r.Stdout != ":4\n" {
		t.Errorf("person show acme <TAB>: got\n%s", r.Stdout)
	}
	// --namespace given on the command line is the one asked.
	if r := s.Run("__complete", "--namespace", "nowhere", "tenant", "show", "").Expect(t, 0); r.Stdout != ":5\n" {
		t.Errorf("another namespace: got\n%s", r.Stdout)
	}
	if r := s.Run("__complete", "--server", "nats://127.0.0.1:1", "tenant", "show", "").Expect(t, 0); r.Stdout != ":5\n" {
		t.Errorf("NATS not there: got\n%s", r.Stdout)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "set", "acme", "--field", ""}, "email-opt-out\nsales-opt-out\n:4\n"},
		{[]string{"tenant", "set", "acme", "--conflict-policy", ""}, "optout-wins\nlatest-wins\n:4\n"},
		{[]string{"tenant", "list", "-o", ""}, "table\njson\ncsv\n:4\n"},
		{[]string{"person", "show", "acme", "x", "--by", ""}, "auto\nsc\nsf\nemail\n:4\n"},
		{[]string{"publish", "acme", "--source", "s"}, "email-link\nsales-user\nimport\napi\nsalesforce\n:4\n"},
		{[]string{"tenant", ""}, "check\tlive Salesforce prerequisite check; exit code 4 when one fails\n" +
			"list\tevery tenant with settings, events, dead letters or a recorded health\n" +
			"set\tchange a tenant's settings (creates them from the defaults for a new tenant)\n" +
			"show\ta tenant's settings, health, backlog, oldest unpushed opt-out and live Salesforce check\n:4\n"},
	} {
		if r := s.Run(append([]string{"__complete"}, tc.args...)...).Expect(t, 0); r.Stdout != tc.want {
			t.Errorf("%v: got\n%s\nwant\n%s", tc.args, r.Stdout, tc.want)
		}
	}
}
