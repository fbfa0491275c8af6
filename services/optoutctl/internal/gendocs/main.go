// Command gendocs writes optoutctl's command reference, one markdown page a
// command, from the command tree itself (cobra/doc), so the reference is
// what the binary accepts; with -check it fails when the committed pages
// differ from it.
//
//	go run ./services/optoutctl/internal/gendocs -out docs/optoutctl   (make docs)
//	go run ./services/optoutctl/internal/gendocs -check docs/optoutctl (make docs-check)
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/root"
)

func main() {
	out := flag.String("out", "", "write the reference into this directory")
	check := flag.String("check", "", "fail when this directory differs from the reference")
	flag.Parse()
	ref, err := Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(2)
	}
	switch {
	case *check != "":
		if err := Check(*check, ref); err != nil {
			fmt.Fprintln(os.Stderr, "gendocs:", err)
			os.Exit(1)
		}
	case *out != "":
		if err := Write(*out, ref); err != nil {
			fmt.Fprintln(os.Stderr, "gendocs:", err)
			os.Exit(2)
		}
	default:
		fmt.Fprintln(os.Stderr, "gendocs: give -out DIR or -check DIR")
		os.Exit(2)
	}
}

// Generate returns the reference: page file name to content.
func Generate() (map[string][]byte, error) {
	tree := root.Command(&cli.Invocation{})
	// A group runs only to name an unknown command; the reference shows it
	// as what it is, a list of commands.
	var groups func(*cobra.Command)
	groups = func(c *cobra.Command) {
		if c.HasSubCommands() {
			c.RunE = nil
		}
		for _, s := range c.Commands() {
			groups(s)
		}
	}
	groups(tree)
	dir, err := os.MkdirTemp("", "optoutctl-docs")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := doc.GenMarkdownTree(tree, dir); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return readPages(dir)
}

func readPages(dir string) (map[string][]byte, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return nil, err
	}
	ref := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		ref[filepath.Base(n)] = b
	}
	return ref, nil
}

// Write makes dir hold exactly the reference: a page of a command that no
// longer exists is removed.
func Write(dir string, ref map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	have, err := readPages(dir)
	if err != nil {
		return err
	}
	for name := range have {
		if _, ok := ref[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	for name, b := range ref {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Check fails, naming the pages, when dir differs from the reference: a
// page changed, missing, or of a command that no longer exists.
func Check(dir string, ref map[string][]byte) error {
	have, err := readPages(dir)
	if err != nil {
		return err
	}
	var stale []string
	for name, b := range ref {
		switch h, ok := have[name]; {
		case !ok:
			stale = append(stale, name+" is missing")
		case !bytes.Equal(h, b):
			stale = append(stale, name+" differs")
		}
	}
	for name := range have {
		if _, ok := ref[name]; !ok {
			stale = append(stale, name+" is of no command")
		}
	}
	if len(stale) == 0 {
		return nil
	}
	slices.Sort(stale)
	return fmt.Errorf("%s is stale (%s): a command, flag or help text changed; run make docs and commit", dir, strings.Join(stale, ", "))
}
