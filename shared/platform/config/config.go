// Package config reads settings from environment variables.
//
// Every service validates all of its settings at start and stops with one
// line that names the variable, the value and what is allowed, so a typo in
// a Helm value is found at deploy time rather than at the first opt-out.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Var documents one variable: a Loader records each it reads, and Declare
// those read elsewhere. docs/configuration.md is generated from them
// (tools/configdoc), so the reference cannot drift from what is read.
type Var struct {
	Name    string
	Default string
	// Allowed is what a set value must be, when the reader checks it.
	Allowed string
	Help    string
}

var (
	declaredMu sync.Mutex
	declared   []Var
)

// Declare records a variable that a library reads where it is used rather
// than through a Loader (the log level, OpenTelemetry's variables, a tenant's
// Salesforce credentials), so the configuration reference lists it too. It
// returns the name, for the reader to use.
func Declare(v Var) string {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	declared = append(declared, v)
	return v.Name
}

// Declared lists what Declare recorded, in order.
func Declared() []Var {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	return slices.Clone(declared)
}

// Loader reads variables, remembering the first invalid one.
type Loader struct {
	lookup func(string) (string, bool)
	errs   []error
	vars   []Var
}

// FromEnv reads the process environment.
func FromEnv() *Loader { return &Loader{lookup: os.LookupEnv} }

// FromMap reads a fixed map (tests).
func FromMap(m map[string]string) *Loader {
	return &Loader{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Error is an invalid setting.
type Error struct {
	Name, Value, Allowed string
}

func (e *Error) Error() string {
	// The value is quoted to show the typo, never a secret in it.
	return fmt.Sprintf("config: %s=%q is invalid: %s", e.Name, shown(e.Name, e.Value), MaskUserinfo(e.Allowed))
}

func (l *Loader) get(name, def, allowed, help string) (string, bool) {
	l.vars = append(l.vars, Var{Name: name, Default: def, Allowed: allowed, Help: help})
	v, ok := l.lookup(name)
	if !ok || v == "" {
		return def, false
	}
	return v, true
}

// Invalid records a cross-variable error that no single reader can see.
func (l *Loader) Invalid(name, value, allowed string) { l.fail(name, value, allowed) }

func (l *Loader) fail(name, value, allowed string) {
	l.errs = append(l.errs, &Error{Name: name, Value: value, Allowed: allowed})
}

// String returns the variable or def; with allowed values given, anything
// else is an error.
func (l *Loader) String(name, def, help string, allowed ...string) string {
	want := ""
	if len(allowed) > 0 {
		want = "one of " + strings.Join(allowed, ", ")
	}
	v, _ := l.get(name, def, want, help)
	if len(allowed) > 0 && !slices.Contains(allowed, v) {
		l.fail(name, v, "want "+want)
		return def
	}
	return v
}

// Required returns the variable, failing when it is unset.
func (l *Loader) Required(name, help string) string {
	v, ok := l.get(name, "", "required", help)
	if !ok {
		l.fail(name, "", "it is required")
	}
	return v
}

// Int returns an integer within [min, max].
func (l *Loader) Int(name string, def, min, max int, help string) int {
	s, set := l.get(name, strconv.Itoa(def), fmt.Sprintf("integer from %d to %d", min, max), help)
	if !set {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		l.fail(name, s, fmt.Sprintf("want an integer from %d to %d", min, max))
		return def
	}
	return n
}

// Float returns a number within [min, max].
func (l *Loader) Float(name string, def, min, max float64, help string) float64 {
	s, set := l.get(name, strconv.FormatFloat(def, 'f', -1, 64), fmt.Sprintf("number from %g to %g", min, max), help)
	if !set {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < min || f > max {
		l.fail(name, s, fmt.Sprintf("want a number from %g to %g", min, max))
		return def
	}
	return f
}

// Duration returns a Go duration (e.g. 25ms, 2m) within [min, max].
func (l *Loader) Duration(name string, def, min, max time.Duration, help string) time.Duration {
	s, set := l.get(name, shortDuration(def), fmt.Sprintf("duration from %s to %s", shortDuration(min), shortDuration(max)), help)
	if !set {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < min || d > max {
		l.fail(name, s, fmt.Sprintf("want a duration such as 30s or 5m, from %s to %s", min, max))
		return def
	}
	return d
}

// shortDuration writes d as an operator would (5m, 1h, 720h), not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Computed returns the variable, or def() when it is unset: a default known
// only at start (a hostname, a random suffix), which doc describes for the
// reference.
func (l *Loader) Computed(name string, def func() string, doc, help string) string {
	if s, set := l.get(name, doc, "", help); set {
		return s
	}
	return def()
}

// Bool returns true/false (also 1/0, yes/no).
func (l *Loader) Bool(name string, def bool, help string) bool {
	s, set := l.get(name, strconv.FormatBool(def), "true or false", help)
	if !set {
		return def
	}
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	l.fail(name, s, "want true or false")
	return def
}

// HostPort returns a listen or dial address such as :9090 or 127.0.0.1:4222.
func (l *Loader) HostPort(name, def, help string) string {
	s, set := l.get(name, def, "host:port", help)
	if !set {
		return def
	}
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		l.fail(name, s, "want host:port, e.g. :9090")
		return def
	}
	return s
}

// File returns a path that must exist when set.
func (l *Loader) File(name, help string) string {
	s, set := l.get(name, "", "path of an existing file", help)
	if !set {
		return ""
	}
	if _, err := os.Stat(s); err != nil {
		l.fail(name, s, "no such file")
		return ""
	}
	return s
}

// Err reports every invalid setting, or nil.
func (l *Loader) Err() error { return errors.Join(l.errs...) }

// Vars lists what was read, in order.
func (l *Loader) Vars() []Var { return slices.Clone(l.vars) }

// Exit prints each invalid setting on one line and exits 2; it returns when
// every setting is valid. Services call it once after loading.
func (l *Loader) Exit(stderr io.Writer) {
	if len(l.errs) == 0 {
		return
	}
	for _, err := range l.errs {
		fmt.Fprintln(stderr, err)
	}
	os.Exit(2)
}
