// Package cli is optoutctl's small command framework on the standard flag
// package: a tree of commands, flags accepted anywhere after the command
// (kubectl style), global connection and output flags, help, and the
// mapping of errors to exit codes and one-line messages.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Command is one node of the command tree: a group (Sub) or a leaf (Run).
type Command struct {
	Name  string
	Short string // one line, shown in the parent's list
	// Usage is the synopsis after the command path, e.g. "<tenant> [flags]".
	Usage string
	// Long is shown by --help under the synopsis.
	Long string
	// Args checks the positional arguments before Run.
	Args  func(args []string) error
	Flags func(fs *flag.FlagSet)
	Run   func(ctx context.Context, inv *Invocation, args []string) error
	Sub   []*Command
}

// Invocation is one run of the tool: its I/O, environment and global flags.
type Invocation struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	// Env is the process environment (tests pass their own, so they run in
	// parallel without touching os.Environ).
	Env map[string]string
	Now func() time.Time
	Global
	// Path is the command path being run, e.g. "optoutctl tenant show".
	Path string
}

// Global flags, accepted by every command.
type Global struct {
	Output           string // table | json | csv
	OutputSet        bool   // -o was given
	Server           string // NATS_URL
	Namespace        string // OPTOUT_NAMESPACE
	Creds            string // NATS_CREDS_FILE
	SFCredentialsDir string // OPTOUT_SF_CREDENTIALS_DIR
	Timeout          time.Duration
}

// Output formats.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
)

// Getenv looks a variable up, with the global flags overriding their
// variables.
func (inv *Invocation) Getenv(name string) (string, bool) {
	over := map[string]string{
		"NATS_URL": inv.Server, "OPTOUT_NAMESPACE": inv.Namespace, "NATS_CREDS_FILE": inv.Creds,
		"OPTOUT_SF_CREDENTIALS_DIR": inv.SFCredentialsDir,
	}
	if v := over[name]; v != "" {
		return v, true
	}
	v, ok := inv.Env[name]
	return v, ok
}

// Environ is the environment with the global flags applied.
func (inv *Invocation) Environ() map[string]string {
	out := make(map[string]string, len(inv.Env)+4)
	for k, v := range inv.Env {
		out[k] = v
	}
	for _, k := range []string{"NATS_URL", "OPTOUT_NAMESPACE", "NATS_CREDS_FILE", "OPTOUT_SF_CREDENTIALS_DIR"} {
		if v, ok := inv.Getenv(k); ok {
			out[k] = v
		}
	}
	return out
}

// Clock returns the invocation's time.
func (inv *Invocation) Clock() time.Time {
	if inv.Now != nil {
		return inv.Now().UTC()
	}
	return time.Now().UTC()
}

type stringValue struct {
	p   *string
	set *bool
}

func (s stringValue) String() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

func (s stringValue) Set(v string) error {
	*s.p = v
	if s.set != nil {
		*s.set = true
	}
	return nil
}

func (g *Global) register(fs *flag.FlagSet) {
	out := stringValue{p: &g.Output, set: &g.OutputSet}
	fs.Var(out, "o", "output format: table, json or csv (short for --output)")
	fs.Var(out, "output", "output format: table, json or csv")
	fs.StringVar(&g.Server, "server", "", "NATS server URL(s) (default $NATS_URL or nats://127.0.0.1:4222)")
	fs.StringVar(&g.Namespace, "namespace", "", "prefix of every subject, stream and bucket (default $OPTOUT_NAMESPACE)")
	fs.StringVar(&g.Creds, "creds", "", "NATS .creds file (default $NATS_CREDS_FILE)")
	fs.StringVar(&g.SFCredentialsDir, "sf-credentials-dir", "", "directory of per-tenant Salesforce Secrets (default $OPTOUT_SF_CREDENTIALS_DIR or /etc/optout/salesforce)")
	fs.DurationVar(&g.Timeout, "timeout", 2*time.Minute, "give up after this long (0: no limit)")
}

// globalTakesValue says whether a global flag reads the next argument.
func globalTakesValue(arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	switch name {
	case "o", "output", "server", "namespace", "creds", "sf-credentials-dir", "timeout":
		return true
	}
	return false
}

// Main runs the tool and returns the process exit code. Errors are printed
// to Stderr as one line: "optoutctl: <what went wrong; what to do>".
func Main(ctx context.Context, root *Command, args []string, inv *Invocation) int {
	err := run(ctx, root, args, inv)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(inv.Stderr, "%s: %s\n", root.Name, oneLine(err.Error()))
	return CodeOf(err)
}

func run(ctx context.Context, root *Command, args []string, inv *Invocation) error {
	cmd, path, rest, err := resolve(root, args)
	if err != nil {
		return err
	}
	inv.Path = strings.Join(path, " ")
	fs := flag.NewFlagSet(inv.Path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	inv.Output = FormatTable
	inv.register(fs)
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		help(inv.Stdout, cmd, inv.Path, fs)
		return flag.ErrHelp
	}
	if err != nil {
		return Usagef("%v; run '%s --help'", err, inv.Path)
	}
	switch inv.Output {
	case FormatTable, FormatJSON, FormatCSV:
	default:
		return Usagef("output format %q: want table, json or csv", inv.Output)
	}
	if cmd.Run == nil {
		if len(pos) > 0 {
			return Usagef("unknown command %q for '%s'; run '%s --help'", pos[0], inv.Path, inv.Path)
		}
		if len(path) == 1 {
			help(inv.Stdout, cmd, inv.Path, fs)
			return flag.ErrHelp
		}
		help(inv.Stderr, cmd, inv.Path, fs)
		return Usagef("'%s' needs a command; see the list above", inv.Path)
	}
	if cmd.Args != nil {
		if err := cmd.Args(pos); err != nil {
			return Usagef("%v; usage: %s %s", err, inv.Path, cmd.Usage)
		}
	}
	if inv.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, inv.Timeout)
		defer cancel()
	}
	err = cmd.Run(ctx, inv, pos)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && CodeOf(err) == ExitError {
		return Failf(err, "%s: gave up after --timeout %s; retry, or raise --timeout (0: no limit)", oneLine(err.Error()), inv.Timeout)
	}
	return err
}

// resolve walks the command tree. Before the leaf only global flags may
// appear (their values are skipped); after it, anything.
func resolve(root *Command, args []string) (*Command, []string, []string, error) {
	cmd, path := root, []string{root.Name}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			rest = append(rest, a)
			if globalTakesValue(a) && i+1 < len(args) {
				rest = append(rest, args[i+1])
				i++
			}
			continue
		}
		if cmd.Run == nil {
			if sub := find(cmd, a); sub != nil {
				cmd, path = sub, append(path, sub.Name)
				continue
			}
		}
		rest = append(rest, a)
	}
	return cmd, path, rest, nil
}

func find(cmd *Command, name string) *Command {
	for _, s := range cmd.Sub {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// parseInterspersed parses flags wherever they appear among the arguments;
// "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// Parse consumes a "--" terminator: everything after it is positional.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func help(w io.Writer, cmd *Command, path string, fs *flag.FlagSet) {
	if cmd.Run != nil {
		fmt.Fprintf(w, "Usage: %s %s\n", path, cmd.Usage)
	} else {
		fmt.Fprintf(w, "Usage: %s <command> [flags]\n", path)
	}
	if cmd.Short != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.Short)
	}
	if cmd.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.Long))
	}
	if len(cmd.Sub) > 0 {
		fmt.Fprintln(w, "\nCommands:")
		for _, s := range cmd.Sub {
			fmt.Fprintf(w, "  %-10s %s\n", s.Name, s.Short)
		}
	}
	var own, global []string
	fs.VisitAll(func(f *flag.Flag) {
		line := fmt.Sprintf("  --%-20s %s", f.Name, f.Usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		switch f.Name {
		case "o", "output", "server", "namespace", "creds", "sf-credentials-dir", "timeout":
			if f.Name != "o" {
				global = append(global, line)
			}
		default:
			own = append(own, line)
		}
	})
	sort.Strings(own)
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fmt.Fprintln(w, strings.Join(own, "\n"))
	}
	fmt.Fprintln(w, "\nGlobal flags (-o is short for --output):")
	fmt.Fprintln(w, strings.Join(global, "\n"))
	if len(cmd.Sub) > 0 {
		fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", path)
	}
}

// ExactArgs wants n positional arguments, named for the message.
func ExactArgs(names ...string) func([]string) error {
	return func(args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("want %d argument(s) (%s), got %d", len(names), strings.Join(names, ", "), len(args))
		}
		return nil
	}
}

// RangeArgs wants between min and max positional arguments (max < 0: any).
func RangeArgs(min, max int, names string) func([]string) error {
	return func(args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return fmt.Errorf("want %s, got %d argument(s)", names, len(args))
		}
		return nil
	}
}
