package config

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestInvalidValuesNameVariableValueAndAllowed(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		read func(*Loader)
		want string
	}{
		{map[string]string{"W": "abc"}, func(l *Loader) { l.Int("W", 4, 1, 64, "") },
			`config: W="abc" is invalid: want an integer from 1 to 64`},
		{map[string]string{"W": "0"}, func(l *Loader) { l.Int("W", 4, 1, 64, "") },
			`config: W="0" is invalid: want an integer from 1 to 64`},
		{map[string]string{"D": "5 minutes"}, func(l *Loader) { l.Duration("D", time.Second, time.Millisecond, time.Hour, "") },
			`config: D="5 minutes" is invalid: want a duration such as 30s or 5m, from 1ms to 1h0m0s`},
		{map[string]string{"F": "email"}, func(l *Loader) { l.String("F", "EMAIL_OPT_OUT", "", "EMAIL_OPT_OUT", "SALES_OPT_OUT") },
			`config: F="email" is invalid: want one of EMAIL_OPT_OUT, SALES_OPT_OUT`},
		{map[string]string{"B": "maybe"}, func(l *Loader) { l.Bool("B", false, "") },
			`config: B="maybe" is invalid: want true or false`},
		{map[string]string{"A": "9090"}, func(l *Loader) { l.HostPort("A", ":9090", "") },
			`config: A="9090" is invalid: want host:port, e.g. :9090`},
		{map[string]string{}, func(l *Loader) { l.Required("R", "") },
			`config: R="" is invalid: it is required`},
		{map[string]string{"P": "/nonexistent/x"}, func(l *Loader) { l.File("P", "") },
			`config: P="/nonexistent/x" is invalid: no such file`},
		{map[string]string{"S": "1.5"}, func(l *Loader) { l.Float("S", 0.2, 0, 1, "") },
			`config: S="1.5" is invalid: want a number from 0 to 1`},
	} {
		l := FromMap(tc.env)
		tc.read(l)
		var ce *Error
		if err := l.Err(); err == nil || err.Error() != tc.want || !errors.As(err, &ce) {
			t.Errorf("got %v; want %s", err, tc.want)
		}
	}
}

func TestDefaultsAndValidValues(t *testing.T) {
	l := FromMap(map[string]string{"W": "8", "D": "25ms", "B": "yes", "A": "127.0.0.1:1"})
	if got := l.Int("W", 4, 1, 64, ""); got != 8 {
		t.Errorf("Int = %d", got)
	}
	if got := l.Duration("D", time.Second, 0, time.Hour, ""); got != 25*time.Millisecond {
		t.Errorf("Duration = %s", got)
	}
	if !l.Bool("B", false, "") {
		t.Error("Bool = false")
	}
	if got := l.String("UNSET", "dflt", "help"); got != "dflt" {
		t.Errorf("String default = %q", got)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if v := l.Vars(); len(v) != 4 || v[3].Name != "UNSET" || v[3].Default != "dflt" {
		t.Errorf("Vars = %+v", v)
	}
}

// TestExitPrintsOneLineAndFails runs a child process that loads a bad value,
// as a service's main would, and checks its exit code and message.
func TestExitPrintsOneLineAndFails(t *testing.T) {
	if os.Getenv("CONFIG_EXIT_CHILD") == "1" {
		l := FromEnv()
		l.Int("OPTOUT_WORKERS", 8, 1, 1024, "")
		l.Exit(os.Stderr)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitPrintsOneLineAndFails$")
	cmd.Env = append(os.Environ(), "CONFIG_EXIT_CHILD=1", "OPTOUT_WORKERS=lots")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v; want exit status 2", err)
	}
	want := `config: OPTOUT_WORKERS="lots" is invalid: want an integer from 1 to 1024`
	if got := strings.TrimSpace(stderr.String()); got != want {
		t.Fatalf("stderr = %q; want %q", got, want)
	}
}

// The reference (docs/configuration.md) is generated from what a Loader
// records: each reader records its default as an operator writes it and what
// a set value must be.
func TestVarsRecordDefaultAndAllowed(t *testing.T) {
	l := FromMap(map[string]string{"ID": "replica-a"})
	l.Duration("D", 5*time.Minute, time.Millisecond, 720*time.Hour, "a duration")
	l.Int("W", 4, 1, 64, "")
	l.String("F", "file", "", "file", "memory")
	if got := l.Computed("ID", func() string { return "computed" }, "hostname", ""); got != "replica-a" {
		t.Errorf("Computed set = %q", got)
	}
	if got := l.Computed("UNSET", func() string { return "computed" }, "hostname", ""); got != "computed" {
		t.Errorf("Computed unset = %q", got)
	}
	want := []Var{
		{Name: "D", Default: "5m", Allowed: "duration from 1ms to 720h", Help: "a duration"},
		{Name: "W", Default: "4", Allowed: "integer from 1 to 64"},
		{Name: "F", Default: "file", Allowed: "one of file, memory"},
		{Name: "ID", Default: "hostname"},
		{Name: "UNSET", Default: "hostname"},
	}
	if got := l.Vars(); !slices.Equal(got, want) {
		t.Errorf("Vars = %+v\nwant %+v", got, want)
	}
}

func TestDeclaredListsVariablesReadOutsideALoader(t *testing.T) {
	name := Declare(Var{Name: "CONFIG_TEST_DECLARED", Default: "x", Help: "read by a library"})
	if name != "CONFIG_TEST_DECLARED" {
		t.Errorf("Declare returned %q", name)
	}
	if !slices.ContainsFunc(Declared(), func(v Var) bool { return v.Name == name && v.Default == "x" }) {
		t.Errorf("Declared() = %+v; want it to hold %s", Declared(), name)
	}
}
