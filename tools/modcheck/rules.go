package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A rule forbids packages under From (and, unless OnlyBuild, their tests)
// to reach, directly or not, packages under any of To, except under Allow.
// Packages under Except are left to a rule of their own.
type rule struct {
	From      string
	Except    []string
	To        []string
	Allow     []string // exceptions to To
	TestAllow []string // further exceptions for From's tests only
	Why       string
}

// fixed are the boundaries, as paths below prefix, that name their packages.
// The emulator must share no code with what it checks; shared is below every
// service. The harnesses are the exceptions to "no service imports another":
// they run several services in one process on purpose.
var fixed = []rule{
	{From: "shared", To: []string{""}, Allow: []string{"shared", "proto"},
		TestAllow: []string{"services/sfsandbox", "internal/refmodel", "internal/sandboxproc"},
		Why:       "shared depends only on shared and proto; its tests may also use the emulator (in process, or as a process: internal/sandboxproc) and the reference model, which depend on nothing of ours"},
	{From: "internal/refmodel", To: []string{""}, Allow: []string{"internal/refmodel"},
		Why: "the reference model is written apart from the code it checks"},
	{From: "shared/adapter/natsx", To: []string{""}, Allow: []string{"shared/adapter/natsx", "shared/platform/config", "shared/platform/telemetry", "shared/platform/logx"},
		Why: "natsx is NATS plumbing (connection, provisioning, topology, publishing): it depends on no domain, store or adapter of ours, only on config, telemetry and logs"},
	// The layers of shared/, each allowed only what is below it: domain,
	// then platform, adapters, stores, flows. process is platform's one
	// exception: it is the start-up that wires the stores a service needs.
	{From: "shared/domain", To: []string{""}, Allow: []string{"shared/domain", "proto"},
		TestAllow: []string{"internal/refmodel"},
		Why:       "the domain is pure: it depends on nothing of ours but itself and the event contract"},
	{From: "shared/platform", Except: []string{"shared/platform/process"}, To: []string{"shared"}, Allow: []string{"shared/platform"},
		Why: "the platform (telemetry, logs, config, admin HTTP) knows no domain, adapter or store"},
	{From: "shared/adapter", To: []string{"shared"}, Allow: []string{"shared/adapter", "shared/domain", "shared/platform"},
		Why: "adapters speak to the outside (NATS, Salesforce) for the domain; they use no store or flow"},
	{From: "shared/store", To: []string{"shared"}, Allow: []string{"shared/store", "shared/domain", "shared/platform", "shared/adapter/natsx"},
		Why: "stores keep the domain's state in NATS: they use the domain, the platform and the NATS plumbing only"},
	{From: "services/sfsandbox", To: []string{""}, Allow: []string{"services/sfsandbox"},
		Why: "the emulator depends on nothing of ours"},
	{From: "services/demo", To: []string{"services"}, Allow: []string{"services/demo", "services/pusher", "services/admin", "services/sfsandbox"},
		Why: "the demo runs the pusher, the admin service and the emulator in its process, no other service"},
	{From: "services/optoutctl/internal/testkit", To: []string{"services"},
		Allow: []string{"services/optoutctl", "services/pusher", "services/reconciler", "services/sfsandbox"},
		Why:   "the CLI's test harness runs the real pusher and reconciler against the emulator"},
	// The in-process test stack, written once for every harness: its core
	// runs no service, so the tests of any service may use it; running a
	// pusher replica is pushstack's, which only the pusher's tests, the CLI's
	// and the admin page's (and bench/chaos) import, so the reconciler's
	// tests still reach no other service; running a reconciler replica is
	// reconstack's, which only the reconciler's tests (through recontest)
	// and the CLI's import, so the pusher's tests reach no other service
	// either.
	{From: "internal/teststack", Except: []string{"internal/teststack/pushstack", "internal/teststack/reconstack"}, To: []string{"services"},
		Allow: []string{"services/sfsandbox"},
		Why:   "the shared test stack runs no service (pushstack runs the pusher, reconstack the reconciler), so every service's tests can use it"},
	{From: "internal/teststack/pushstack", To: []string{"services"},
		Allow: []string{"services/pusher", "services/sfsandbox"},
		Why:   "pushstack runs pusher replicas on the test stack, no other service"},
	{From: "internal/teststack/reconstack", To: []string{"services"},
		Allow: []string{"services/reconciler", "services/sfsandbox"},
		Why:   "reconstack runs reconciler replicas on the test stack, no other service"},
	{From: "services/reconciler/internal/recontest", To: []string{"services"},
		Allow: []string{"services/reconciler", "services/sfsandbox"},
		Why:   "the reconciler's test harness runs its engine against the emulator"},
}

// rules are fixed plus, for every service found (a directory under
// services/), "no service imports another": its tests may use the emulator
// and, for the CLI, the services it operates.
func rules(pkgs []Package) []rule {
	out := slices.Clone(fixed)
	var except []string
	for _, r := range fixed {
		except = append(except, r.From)
	}
	seen := map[string]bool{}
	for _, p := range pkgs {
		rest, ok := strings.CutPrefix(p.ImportPath, prefix+"services/")
		if !ok {
			continue
		}
		svc, _, _ := strings.Cut(rest, "/")
		if seen[svc] || slices.Contains(except, "services/"+svc) {
			seen[svc] = true
			continue
		}
		seen[svc] = true
		r := rule{From: "services/" + svc, Except: except, To: []string{"services"}, Allow: []string{"services/" + svc},
			TestAllow: []string{"services/sfsandbox"}, Why: "no service imports another; tests may use the emulator"}
		switch svc {
		case "optoutctl":
			r.TestAllow = append(r.TestAllow, "services/pusher", "services/reconciler")
			r.Why = "no service imports another; the CLI's tests may also run the services it operates"
		case "admin":
			r.TestAllow = append(r.TestAllow, "services/pusher")
			r.Why = "no service imports another; the admin page's browser test may also run the pusher whose work it shows"
		}
		out = append(out, r)
	}
	return out
}

// under reports whether import path p is the package tree rel below prefix
// ("" is every package of ours).
func under(p, rel string) bool {
	if rel == "" {
		return strings.HasPrefix(p, prefix)
	}
	return p == prefix+rel || strings.HasPrefix(p, prefix+rel+"/")
}

func underAny(p string, rels []string) bool {
	return slices.ContainsFunc(rels, func(rel string) bool { return under(p, rel) })
}

// Check returns one line per package that breaks a rule, with the import
// chain that does it.
func Check(pkgs []Package) []string {
	byPath := map[string]Package{}
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	rs := rules(pkgs)
	var out []string
	for _, p := range pkgs {
		for _, r := range rs {
			if !under(p.ImportPath, r.From) || underAny(p.ImportPath, r.Except) {
				continue
			}
			forbidden := func(allow []string) func(string) bool {
				return func(q string) bool { return underAny(q, r.To) && !underAny(q, allow) }
			}
			if chain := reach(byPath, p.Imports, forbidden(r.Allow)); chain != nil {
				out = append(out, fmt.Sprintf("%s imports %s (%s)", p.ImportPath, strings.Join(chain, " -> "), r.Why))
			}
			if chain := reach(byPath, p.TestImports, forbidden(append(slices.Clone(r.Allow), r.TestAllow...))); chain != nil {
				out = append(out, fmt.Sprintf("%s tests import %s (%s)", p.ImportPath, strings.Join(chain, " -> "), r.Why))
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// reach walks the non-test imports from roots (breadth first) and returns
// the chain to the first package bad reports, or nil.
func reach(byPath map[string]Package, roots []string, bad func(string) bool) []string {
	parent := map[string]string{}
	var queue []string
	for _, r := range roots {
		if _, seen := parent[r]; !seen && strings.HasPrefix(r, prefix) {
			parent[r] = ""
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		if bad(q) {
			var chain []string
			for c := q; c != ""; c = parent[c] {
				chain = append([]string{c}, chain...)
			}
			return chain
		}
		for _, imp := range byPath[q].Imports {
			if _, seen := parent[imp]; !seen && strings.HasPrefix(imp, prefix) {
				parent[imp] = q
				queue = append(queue, imp)
			}
		}
	}
	return nil
}
