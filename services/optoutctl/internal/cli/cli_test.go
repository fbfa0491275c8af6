package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pos       string
		yes, code string
	}{
		{[]string{"acme", "--yes", "1", "2"}, "[acme 1 2]", "true", ""},
		{[]string{"--code", "x", "acme"}, "[acme]", "false", "x"},
		{[]string{"acme", "--", "--yes"}, "[acme --yes]", "false", ""},
		{[]string{"--", "-1"}, "[-1]", "false", ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		yes := fs.Bool("yes", false, "")
		code := fs.String("code", "", "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if fmt.Sprint(pos) != tc.pos || fmt.Sprint(*yes) != tc.yes || *code != tc.code {
			t.Errorf("%v: positionals %v yes %t code %q", tc.args, pos, *yes, *code)
		}
	}
}

func TestCSVDefusesFormulas(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCSV(&b, []string{"reason"}, [][]string{{"=HYPERLINK(\"http://x\")"}, {"+1"}, {"-2"}, {"@SUM(A1)"}, {"plain, text"}}); err != nil {
		t.Fatal(err)
	}
	want := "reason\n\"'=HYPERLINK(\"\"http://x\"\")\"\n'+1\n'-2\n'@SUM(A1)\n\"plain, text\"\n"
	if b.String() != want {
		t.Errorf("csv:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestErrorsMapToExitCodes(t *testing.T) {
	for err, code := range map[error]int{
		nil: ExitOK, errors.New("x"): ExitError, Usagef("u"): ExitUsage, NotFoundf("n"): ExitNotFound,
		Prereqf("p"): ExitPrereq, fmt.Errorf("wrapped: %w", NotFoundf("n")): ExitNotFound, Failf(nil, "f"): ExitError,
	} {
		if got := CodeOf(err); got != code {
			t.Errorf("CodeOf(%v) = %d, want %d", err, got, code)
		}
	}
}

func TestMainPrintsOneLineAndRunsTheLeaf(t *testing.T) {
	var ran []string
	root := &Command{Name: "tool", Sub: []*Command{{
		Name: "grp", Sub: []*Command{{
			Name: "leaf", Args: ExactArgs("x"),
			Run: func(_ context.Context, inv *Invocation, args []string) error {
				ran = append(ran, args[0], inv.Output)
				if args[0] == "fail" {
					return errors.New("line one\nline two")
				}
				return nil
			},
		}},
	}}}
	var out, errOut bytes.Buffer
	inv := &Invocation{Stdout: &out, Stderr: &errOut}
	if code := Main(context.Background(), root, []string{"-o", "json", "grp", "leaf", "a"}, inv); code != 0 || fmt.Sprint(ran) != "[a json]" {
		t.Fatalf("code %d ran %v stderr %s", code, ran, errOut.String())
	}
	if code := Main(context.Background(), root, []string{"grp", "leaf", "fail"}, inv); code != ExitError || errOut.String() != "tool: line one; line two\n" {
		t.Fatalf("code %d stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := Main(context.Background(), root, []string{"grp", "leaf"}, inv); code != ExitUsage || !strings.Contains(errOut.String(), "want 1 argument(s) (x), got 0") {
		t.Fatalf("code %d stderr %q", code, errOut.String())
	}
}
