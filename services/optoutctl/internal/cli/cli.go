// Package cli is what optoutctl's commands share on top of cobra: the
// invocation (I/O, environment, global flags), Setup, which gives a cobra
// command tree optoutctl's rules (usage errors, groups, --timeout, shell
// completion), Main, which runs it and maps errors to exit codes and
// one-line messages, and the output formats.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Invocation is one run of the tool: its I/O, environment and global flags.
type Invocation struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	// Env is the process environment (tests pass their own, so they run in
	// parallel without touching os.Environ).
	Env map[string]string
	Now func() time.Time
	// StdoutTerminal and StderrTerminal say whether they are terminals
	// (main asks the real files: Stdout and Stderr may be wrapped by the
	// secret scrubber). A progress bar is drawn only when both are.
	StdoutTerminal, StderrTerminal bool
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

// outputValue is -o: an unknown format is refused while parsing, before
// the arguments are looked at, with the message scripts have seen.
type outputValue struct{ p *string }

func (o outputValue) String() string { return *o.p }
func (o outputValue) Type() string   { return "format" }
func (o outputValue) Set(v string) error {
	switch v {
	case FormatTable, FormatJSON, FormatCSV:
		*o.p = v
		return nil
	}
	return Usagef("output format %q: want table, json or csv", v)
}

func (g *Global) register(fs *pflag.FlagSet) {
	g.Output = FormatTable
	fs.VarP(outputValue{&g.Output}, "output", "o", "output format: table, json or csv")
	fs.StringVar(&g.Server, "server", "", "NATS server URL(s) (default $NATS_URL or nats://127.0.0.1:4222)")
	fs.StringVar(&g.Namespace, "namespace", "", "prefix of every subject, stream and bucket (default $OPTOUT_NAMESPACE)")
	fs.StringVar(&g.Creds, "creds", "", "NATS .creds file (default $NATS_CREDS_FILE)")
	fs.StringVar(&g.SFCredentialsDir, "sf-credentials-dir", "", "directory of per-tenant Salesforce Secrets (default $OPTOUT_SF_CREDENTIALS_DIR or /etc/optout/salesforce)")
	fs.DurationVar(&g.Timeout, "timeout", 2*time.Minute, "give up after this long (0: no limit)")
}

// Setup gives a command tree optoutctl's rules and returns root: the global
// flags; the completion command; a group run without a command prints its
// help (the root on stdout with exit 0, any other group on stderr with exit
// 2) and names an unknown command; flag errors are usage errors; each
// command runs under --timeout. Call it once, on the whole tree.
func Setup(root *cobra.Command, inv *Invocation) *cobra.Command {
	inv.Global.register(root.PersistentFlags())
	CompleteFlag(root, "output", FormatTable, FormatJSON, FormatCSV)
	root.AddCommand(completionCmd(root))
	root.SetHelpCommand(helpCmd(root))
	root.CompletionOptions.DisableDefaultCmd = true
	// The generated reference must not change with the day it is made.
	root.DisableAutoGenTag = true
	root.SilenceErrors, root.SilenceUsage = true, true
	root.SetFlagErrorFunc(flagError)
	root.SetHelpTemplate(helpTemplate)
	// A group runs (to name an unknown command), but its synopsis is
	// "<group> [command]" only.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		inv.Path = cmd.CommandPath()
		inv.OutputSet = cmd.Flags().Changed("output")
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && c.RunE == nil:
			c.Args, c.RunE = cobra.ArbitraryArgs, group
			c.SuggestionsMinimumDistance = 2
			if c.ValidArgsFunction == nil {
				c.ValidArgsFunction = cobra.NoFileCompletions
			}
		case c.RunE != nil:
			c.RunE = withTimeout(inv, c.RunE)
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return root
}

// helpTemplate is cobra's with the one-line summary above the details
// (cobra shows only the details when a command has them).
const helpTemplate = `{{with .Short}}{{. | trimTrailingWhitespaces}}

{{end}}{{with .Long}}{{. | trimTrailingWhitespaces}}

{{end}}{{if or .Runnable .HasSubCommands}}{{.UsageString}}{{end}}`

// Main runs the tool and returns the process exit code. Errors are printed
// to Stderr as one line: "optoutctl: <what went wrong; what to do>".
func Main(ctx context.Context, root *cobra.Command, args []string, inv *Invocation) int {
	// Never nil: cobra would read os.Args instead.
	root.SetArgs(append([]string{}, args...))
	root.SetIn(inv.Stdin)
	root.SetOut(inv.Stdout)
	root.SetErr(inv.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(inv.Stderr, "%s: %s\n", root.Name(), oneLine(err.Error()))
	return CodeOf(err)
}

// group runs a command that only holds others.
func group(cmd *cobra.Command, args []string) error {
	path := cmd.CommandPath()
	if len(args) > 0 {
		hint := ""
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return Usagef("unknown command %q for '%s'%s; run '%s --help'", args[0], path, hint, path)
	}
	if !cmd.HasParent() {
		return cmd.Help()
	}
	cmd.SetOut(cmd.ErrOrStderr())
	if err := cmd.Help(); err != nil {
		return err
	}
	return Usagef("'%s' needs a command; see the list above", path)
}

func withTimeout(inv *Invocation, run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if inv.Timeout > 0 {
			ctx, cancel := context.WithTimeout(cmd.Context(), inv.Timeout)
			defer cancel()
			cmd.SetContext(ctx)
		}
		err := run(cmd, args)
		if err != nil && errors.Is(err, context.DeadlineExceeded) && CodeOf(err) == ExitError {
			return Failf(err, "%s: gave up after --timeout %s; retry, or raise --timeout (0: no limit)", oneLine(err.Error()), inv.Timeout)
		}
		return err
	}
}

// flagError is a usage error (exit 2) that names the flag as optoutctl
// always has, and says where the flags are listed.
func flagError(cmd *cobra.Command, err error) error {
	var (
		notExist *pflag.NotExistError
		noValue  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		syntax   *pflag.InvalidSyntaxError
		ours     *Error
	)
	msg := err.Error()
	switch {
	case errors.As(err, &ours):
		return ours
	case errors.As(err, &notExist):
		name := notExist.GetSpecifiedName()
		if group := notExist.GetSpecifiedShortnames(); group != "" {
			name = group
			if cmd.Flags().Lookup(group) != nil {
				name += fmt.Sprintf(" (a long flag takes two dashes: --%s)", group)
			}
		}
		msg = "flag provided but not defined: -" + name
	case errors.As(err, &noValue):
		msg = "flag needs an argument: -" + noValue.GetSpecifiedName()
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		why := errors.Unwrap(invalid)
		var num *strconv.NumError
		switch {
		case errors.As(why, &num) && errors.Is(num.Err, strconv.ErrRange):
			why = errors.New("value out of range")
		case errors.As(why, &num) || f.Value.Type() == "duration":
			why = errors.New("parse error")
		}
		msg = fmt.Sprintf("invalid value %q for flag -%s: %v", invalid.GetValue(), f.Name, why)
	case errors.As(err, &syntax):
		msg = "bad flag syntax: " + syntax.GetSpecifiedFlag()
	}
	return Usagef("%s; run '%s --help'", msg, cmd.CommandPath())
}

// ExactArgs wants n positional arguments, named for the message.
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return argsError(cmd, fmt.Errorf("want %d argument(s) (%s), got %d", len(names), strings.Join(names, ", "), len(args)))
		}
		return nil
	}
}

// RangeArgs wants between min and max positional arguments (max < 0: any).
func RangeArgs(min, max int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return argsError(cmd, fmt.Errorf("want %s, got %d argument(s)", names, len(args)))
		}
		return nil
	}
}

// argsError is a usage error followed by the command's synopsis.
func argsError(cmd *cobra.Command, err error) error {
	_, synopsis, _ := strings.Cut(cmd.Use, " ")
	return Usagef("%v; usage: %s %s", err, cmd.CommandPath(), synopsis)
}
