package cli

import (
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// completionCmd is "completion bash|zsh|fish": the script a shell loads to
// complete optoutctl's commands, flags and (asking NATS as it runs) tenant
// names. Cobra's default command is replaced so only the shells we test are
// offered, and a wrong use fails like any other command.
func completionCmd(root *cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   "completion",
		Short: "print the shell completion script for bash, zsh or fish",
		Long: `Prints a script that makes the shell complete optoutctl's commands, flags
and values; tenant names are read from the tenant settings in NATS while you
type (with the same --server, --namespace and NATS_* settings as any command).`,
	}
	for _, sh := range []struct {
		name, load string
		gen        func(io.Writer) error
	}{
		{"bash", `Needs the bash-completion package. In this shell:

  source <(optoutctl completion bash)

For every new shell (Linux):

  optoutctl completion bash > /etc/bash_completion.d/optoutctl`,
			func(w io.Writer) error { return root.GenBashCompletionV2(w, true) }},
		{"zsh", `In this shell:

  source <(optoutctl completion zsh)

For every new shell, with compinit enabled ("autoload -U compinit; compinit"
in ~/.zshrc):

  optoutctl completion zsh > "${fpath[1]}/_optoutctl"`,
			root.GenZshCompletion},
		{"fish", `In this shell:

  optoutctl completion fish | source

For every new shell:

  optoutctl completion fish > ~/.config/fish/completions/optoutctl.fish`,
			func(w io.Writer) error { return root.GenFishCompletion(w, true) }},
	} {
		c.AddCommand(&cobra.Command{
			Use:               sh.name,
			Short:             "the completion script for " + sh.name,
			Long:              sh.load,
			Args:              ExactArgs(),
			ValidArgsFunction: cobra.NoFileCompletions,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return sh.gen(cmd.OutOrStdout())
			},
		})
	}
	return c
}

// CompleteFlag completes a flag's value from fixed choices. The flag must
// be defined on cmd already (a programming error panics in every test).
func CompleteFlag(cmd *cobra.Command, flag string, choices ...string) {
	if err := cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(choices, cobra.ShellCompDirectiveNoFileComp)); err != nil {
		panic(err)
	}
}

// helpCmd is "help [command]": cobra's, but an unknown command is a usage
// error (exit 2) as everywhere else, not a help page with exit 0.
func helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		ValidArgsFunction: func(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), prefix) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			cmd, rest, err := root.Find(args)
			if err != nil {
				return Usagef("%v", err)
			}
			if len(rest) > 0 {
				return Usagef("unknown command %q for '%s'; run '%s --help'", rest[0], cmd.CommandPath(), cmd.CommandPath())
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}
