// Command configdoc writes docs/configuration.md from what the services'
// loaders read: each service's Load runs on an empty environment (as
// process.Main would run it), and shared/platform/config records every variable with
// its default, what a value must be and its meaning; variables that
// libraries read themselves come from config.Declared. So the reference is
// the code's own list, and `make docs-check` fails when the committed file
// differs from it.
//
//	go run ./tools/configdoc -out docs/configuration.md   (make docs)
//	go run ./tools/configdoc -check docs/configuration.md (make docs-check)
package main

import (
	"bytes"
	"flag"
	"fmt"
	admin "github.com/optout-sync/optout-sync/services/admin/app"
	"os"

	pusher "github.com/optout-sync/optout-sync/services/pusher/app"
	reconciler "github.com/optout-sync/optout-sync/services/reconciler/app"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/process"
)

func main() {
	out := flag.String("out", "", "write the reference to this file")
	check := flag.String("check", "", "fail when this file differs from the reference")
	flag.Parse()
	doc, err := Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "configdoc:", err)
		os.Exit(2)
	}
	switch {
	case *check != "":
		have, err := os.ReadFile(*check)
		if err != nil {
			fmt.Fprintln(os.Stderr, "configdoc:", err)
			os.Exit(2)
		}
		if !bytes.Equal(have, doc) {
			fmt.Fprintf(os.Stderr, "configdoc: %s is stale: a variable, default or help text changed; run make docs and commit\n", *check)
			os.Exit(1)
		}
	case *out != "":
		if err := os.WriteFile(*out, doc, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "configdoc:", err)
			os.Exit(2)
		}
	default:
		os.Stdout.Write(doc)
	}
}

// Service is one binary whose variables the reference lists.
type Service struct {
	Name, Dir string
	Vars      []config.Var
}

// services reads each service's variables as its main does.
func services() ([]Service, error) {
	read := func(name, dir string, load func(*config.Loader)) (Service, error) {
		l := config.FromMap(nil)
		load(l)
		if err := l.Err(); err != nil {
			return Service{}, fmt.Errorf("%s: the defaults are invalid: %w", name, err)
		}
		return Service{Name: name, Dir: dir, Vars: l.Vars()}, nil
	}
	p, err := read("Pusher", "services/pusher", func(l *config.Loader) { process.LoadConfig(l, pusher.Load) })
	if err != nil {
		return nil, err
	}
	r, err := read("Reconciler", "services/reconciler", func(l *config.Loader) { process.LoadConfig(l, reconciler.Load) })
	if err != nil {
		return nil, err
	}
	a, err := read("Admin service", "services/admin", func(l *config.Loader) { process.LoadConfig(l, admin.Load) })
	if err != nil {
		return nil, err
	}
	return []Service{p, r, a}, nil
}

// Generate renders the reference.
func Generate() ([]byte, error) {
	svcs, err := services()
	if err != nil {
		return nil, err
	}
	return Render(svcs, config.Declared()), nil
}
