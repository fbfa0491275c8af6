package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

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

// tree is a small command tree set up as optoutctl's is.
func tree(inv *Invocation, ran *[]string) *cobra.Command {
	var yes bool
	leaf := &cobra.Command{
		Use: "leaf <x> [--yes]", Short: "a leaf", Args: ExactArgs("x"),
		RunE: func(cmd *cobra.Command, args []string) error {
			*ran = append(*ran, args[0], inv.Output, fmt.Sprint(yes))
			if args[0] == "fail" {
				return errors.New("line one\nline two")
			}
			return nil
		},
	}
	leaf.Flags().BoolVar(&yes, "yes", false, "confirm")
	leaf.Flags().Int("limit", 0, "at most")
	grp := &cobra.Command{Use: "grp", Short: "a group"}
	grp.AddCommand(leaf)
	root := &cobra.Command{Use: "tool", Short: "the tool"}
	root.AddCommand(grp)
	return Setup(root, inv)
}

func run(args ...string) (code int, ran []string, stdout, stderr string) {
	var out, errOut bytes.Buffer
	inv := &Invocation{Stdout: &out, Stderr: &errOut}
	code = Main(context.Background(), tree(inv, &ran), args, inv)
	return code, ran, out.String(), errOut.String()
}

func TestMainPrintsOneLineAndRunsTheLeaf(t *testing.T) {
	// Global flags before the command, the leaf's flags after its argument.
	if code, ran, _, stderr := run("-o", "json", "grp", "leaf", "a", "--yes"); code != 0 || fmt.Sprint(ran) != "[a json true]" {
		t.Fatalf("code %d ran %v stderr %s", code, ran, stderr)
	}
	if code, _, _, stderr := run("grp", "leaf", "fail"); code != ExitError || stderr != "tool: line one; line two\n" {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	// "--" ends the flags.
	if code, ran, _, _ := run("grp", "leaf", "--", "--yes"); code != 0 || fmt.Sprint(ran) != "[--yes table false]" {
		t.Fatalf("code %d ran %v", code, ran)
	}
}

// TestUsageErrors: every way of calling the tool wrongly exits 2 with one
// line that says what is wrong and where to look (the messages optoutctl
// printed before cobra).
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"grp", "leaf"}, "tool: want 1 argument(s) (x), got 0; usage: tool grp leaf <x> [--yes]\n"},
		{[]string{"grp", "leaf", "a", "--colour"}, "tool: flag provided but not defined: -colour; run 'tool grp leaf --help'\n"},
		{[]string{"grp", "leaf", "a", "-colour"}, "tool: flag provided but not defined: -colour; run 'tool grp leaf --help'\n"},
		{[]string{"grp", "leaf", "a", "-yes"}, "tool: flag provided but not defined: -yes (a long flag takes two dashes: --yes); run 'tool grp leaf --help'\n"},
		{[]string{"grp", "leaf", "a", "--limit", "x"}, "tool: invalid value \"x\" for flag -limit: parse error; run 'tool grp leaf --help'\n"},
		{[]string{"grp", "leaf", "a", "--limit"}, "tool: flag needs an argument: -limit; run 'tool grp leaf --help'\n"},
		{[]string{"grp", "leaf", "a", "--timeout", "soon"}, "tool: invalid value \"soon\" for flag -timeout: parse error; run 'tool grp leaf --help'\n"},
		{[]string{"-o", "yaml", "grp", "leaf", "a"}, "tool: output format \"yaml\": want table, json or csv\n"},
		{[]string{"grp", "nope"}, "tool: unknown command \"nope\" for 'tool grp'; run 'tool grp --help'\n"},
		{[]string{"nope"}, "tool: unknown command \"nope\" for 'tool'; run 'tool --help'\n"},
		{[]string{"help", "grp", "nope"}, "tool: unknown command \"nope\" for 'tool grp'; run 'tool grp --help'\n"},
		{[]string{"grp", "lef"}, "tool: unknown command \"lef\" for 'tool grp' (did you mean \"leaf\"?); run 'tool grp --help'\n"},
	} {
		code, ran, stdout, stderr := run(tc.args...)
		if code != ExitUsage || stderr != tc.want || stdout != "" || ran != nil {
			t.Errorf("%v: exit %d, ran %v\nstdout %q\nstderr %q\nwant   %q", tc.args, code, ran, stdout, stderr, tc.want)
		}
	}
}

// TestHelp: the root alone and --help print help on stdout with exit 0; a
// group without its command prints it on stderr with exit 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"grp", "-h"}, {"help", "grp"}} {
		if code, _, stdout, stderr := run(args...); code != 0 || !strings.Contains(stdout, "Usage:") || stderr != "" {
			t.Errorf("%v: exit %d\nstdout %s\nstderr %s", args, code, stdout, stderr)
		}
	}
	code, _, stdout, stderr := run("grp")
	if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "Available Commands:") || !strings.HasSuffix(stderr, "\ntool: 'tool grp' needs a command; see the list above\n") {
		t.Errorf("grp: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}

// TestProgressOnlyForAPersonWatching: a bar needs stdout and stderr both at
// a terminal and output other than JSON; it goes to stderr only.
func TestProgressOnlyForAPersonWatching(t *testing.T) {
	for _, tc := range []struct {
		stdout, stderr bool
		output         string
		bar            bool
	}{
		{true, true, FormatTable, true},
		{true, true, FormatCSV, true},
		{true, true, FormatJSON, false},
		{false, true, FormatTable, false},
		{true, false, FormatTable, false},
	} {
		var out, errOut bytes.Buffer
		inv := &Invocation{Stdout: &out, Stderr: &errOut, StdoutTerminal: tc.stdout, StderrTerminal: tc.stderr, Global: Global{Output: tc.output}}
		p := inv.Progress(3, "copying", "things")
		p.Add(1)
		p.Add(2)
		p.Done()
		if drawn := strings.Contains(errOut.String(), "copying"); drawn != tc.bar || out.Len() != 0 {
			t.Errorf("%+v: stdout %q stderr %q", tc, out.String(), errOut.String())
		}
	}
}

// screen is what a terminal shows for s: lines, each with "\r" going back
// to its start and later characters overwriting earlier ones.
func screen(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		var cells []rune
		col := 0
		for _, r := range l {
			if r == '\r' {
				col = 0
				continue
			}
			if col < len(cells) {
				cells[col] = r
			} else {
				cells = append(cells, r)
			}
			col++
		}
		lines = append(lines, strings.TrimRight(string(cells), " "))
	}
	return lines
}

// TestProgressKeepsOutputLinesWhole: rows written to the same terminal as
// the bar scroll above it, each line only the row, and the bar is gone at
// the end.
func TestProgressKeepsOutputLinesWhole(t *testing.T) {
	defer func(d time.Duration) { ProgressEvery = d }(ProgressEvery)
	ProgressEvery = 0 // draw on every row: the worst case for the rows
	var term bytes.Buffer
	inv := &Invocation{Stdout: &term, Stderr: &term, StdoutTerminal: true, StderrTerminal: true, Global: Global{Output: FormatCSV}}
	p := inv.Progress(-1, "exporting acme", "rows")
	out := p.Above(inv.Stdout)
	var want []string
	for i := range 5 {
		row := fmt.Sprintf("key-%d,true,2025-06-01T12:00:00Z", i)
		want = append(want, row)
		fmt.Fprintln(out, row)
		p.Add(1)
	}
	if !strings.Contains(term.String(), "exporting acme") {
		t.Fatalf("no bar drawn: %q", term.String())
	}
	p.Done()
	if got := screen(term.String()); strings.Join(got, "\n") != strings.Join(append(want, ""), "\n") {
		t.Errorf("the terminal shows\n%s\nwant\n%s\n(written %q)", strings.Join(got, "\n"), strings.Join(want, "\n"), term.String())
	}
}
