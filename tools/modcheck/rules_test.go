package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func pkg(rel string, imports []string, tests ...string) Package {
	abs := func(rs []string) []string {
		var out []string
		for _, r := range rs {
			top, _, _ := strings.Cut(r, "/")
			switch top { // ours, given relative; the rest is the standard library
			case "proto", "shared", "services", "internal":
				r = prefix + r
			}
			out = append(out, r)
		}
		return out
	}
	return Package{ImportPath: prefix + rel, Imports: abs(imports), TestImports: abs(tests)}
}

func TestCheckRules(t *testing.T) {
	base := []Package{
		pkg("proto/optout/v1", nil),
		pkg("shared/adapter/sfcreds", []string{"fmt"}),
		pkg("shared/adapter/salesforce", []string{"net/http", "proto/optout/v1"}, "services/sfsandbox/sandbox"),
		pkg("services/sfsandbox/sandbox", []string{"net/http"}),
		pkg("services/sfsandbox", []string{"services/sfsandbox/sandbox"}),
		pkg("internal/testsandbox", []string{"services/sfsandbox/sandbox", "shared/adapter/sfcreds"}),
		pkg("services/pusher/push", []string{"shared/adapter/sfcreds"}, "internal/testsandbox"),
		pkg("services/reconciler/service", []string{"shared/adapter/sfcreds"}, "internal/testsandbox"),
		pkg("services/optoutctl/internal/testkit", []string{"services/pusher/push", "services/reconciler/service"}),
		pkg("services/reconciler/internal/recontest", []string{"services/reconciler/engine", "services/sfsandbox/sandbox", "internal/testsandbox"}),
		pkg("services/reconciler/engine", []string{"shared/adapter/sfcreds"}, "services/reconciler/internal/recontest"),
		pkg("services/optoutctl/internal/root", []string{"shared/adapter/sfcreds"}, "services/optoutctl/internal/testkit", "services/reconciler/service"),
		pkg("services/demo/stack", []string{"services/pusher/app", "services/sfsandbox/sandbox"}),
		pkg("services/pusher/app", []string{"services/pusher/push"}),
		pkg("internal/teststack", []string{"internal/testsandbox", "services/sfsandbox/sandbox", "shared/adapter/sfcreds"}),
		pkg("internal/teststack/pushstack", []string{"internal/teststack", "services/pusher/push"}),
		pkg("internal/teststack/reconstack", []string{"internal/teststack", "services/reconciler/service"}),
	}
	if vs := Check(base); len(vs) != 0 {
		t.Fatalf("allowed graph reported: %v", vs)
	}
	cases := []struct {
		name string
		add  Package
		want string // in the one violation
	}{
		{"shared imports a service", pkg("shared/platform/telemetry", []string{"services/pusher/push"}), "shared/platform/telemetry imports " + prefix + "services/pusher/push"},
		{"shared imports another module of ours", pkg("shared/store/lock", []string{"internal/testsandbox"}), "shared/store/lock imports " + prefix + "internal/testsandbox"},
		{"shared tests use a service other than the emulator", pkg("shared/store/ledger", nil, "services/pusher/push"), "shared/store/ledger tests import"},
		{"the emulator imports shared", pkg("services/sfsandbox/sandbox/x", []string{"shared/adapter/sfcreds"}), "the emulator depends on nothing of ours"},
		{"the emulator's tests import shared", pkg("services/sfsandbox/sandbox/y", nil, "shared/adapter/sfcreds"), "tests import"},
		{"the pusher imports the reconciler", pkg("services/pusher/other", []string{"services/reconciler/service"}), "services/pusher/other imports " + prefix + "services/reconciler/service (no service imports another"},
		{"the reconciler's tests import the pusher", pkg("services/reconciler/app", nil, "services/pusher/push"), "reconciler/app tests import"},
		{"the reconciler's test harness imports the pusher", pkg("services/reconciler/internal/recontest/x", []string{"services/pusher/push"}), "recontest/x imports"},
		{"the test stack runs a service", pkg("internal/teststack/other", []string{"services/pusher/push"}), "internal/teststack/other imports " + prefix + "services/pusher/push (the shared test stack runs no service"},
		{"pushstack runs the reconciler", pkg("internal/teststack/pushstack/x", []string{"services/reconciler/service"}), "pushstack/x imports"},
		{"the reconciler's tests run a pusher through the test stack", pkg("services/reconciler/other", nil, "internal/teststack/pushstack"), "reconciler/other tests import"},
		{"reconstack runs the pusher", pkg("internal/teststack/reconstack/x", []string{"services/pusher/push"}), "reconstack/x imports " + prefix + "services/pusher/push (reconstack runs reconciler replicas"},
		{"the pusher's tests run a reconciler through the test stack", pkg("services/pusher/other", nil, "internal/teststack/reconstack"), "pusher/other tests import"},
		{"the CLI imports the pusher outside its test harness", pkg("services/optoutctl/internal/conn", []string{"services/pusher/push"}), "optoutctl/internal/conn imports"},
		{"the pusher imports the CLI", pkg("services/pusher/cli", []string{"services/optoutctl/internal/root"}), "no service imports another"},
		{"a new service imports the pusher", pkg("services/admin/page", []string{"services/pusher/app"}), "services/admin/page imports"},
		{"a new service's tests import the reconciler", pkg("services/admin/page2", nil, "services/reconciler/service"), "services/admin/page2 tests import"},
		{"the demo imports the reconciler", pkg("services/demo/more", []string{"services/reconciler/service"}), "the demo runs the pusher"},
		{"the domain imports a store", pkg("shared/domain/optout", []string{"shared/store/ledger"}), "the domain is pure"},
		{"a store imports a flow", pkg("shared/store/ledger", []string{"shared/flow/ingest"}), "stores keep the domain's state"},
		{"an adapter imports a store", pkg("shared/adapter/salesforce", []string{"shared/store/tenant"}), "adapters speak to the outside"},
		{"the platform imports an adapter", pkg("shared/platform/logx", []string{"shared/adapter/sfcreds"}), "the platform"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := Check(append(append([]Package(nil), base...), c.add))
			// A forbidden import may break a layer rule as well as the
			// rule the case is about.
			if len(vs) == 0 || !slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(v, c.want) }) {
				t.Fatalf("got %q, want a violation containing %q", vs, c.want)
			}
		})
	}
}

// TestNatsxImportsNoDomain: the NATS layer may use the platform (config,
// telemetry, logs) and nothing else of ours, in its code or its tests.
func TestNatsxImportsNoDomain(t *testing.T) {
	base := []Package{
		pkg("proto/optout/v1", nil),
		pkg("shared/platform/logx", []string{"fmt"}),
		pkg("shared/platform/telemetry", []string{"shared/platform/logx"}),
		pkg("shared/platform/config", []string{"shared/platform/logx"}),
		pkg("shared/adapter/natsx", []string{"shared/platform/config", "shared/platform/telemetry"}, "shared/adapter/natsx/natstest"),
		pkg("shared/adapter/natsx/natstest", []string{"shared/adapter/natsx"}),
		pkg("shared/domain/event", []string{"proto/optout/v1"}),
		pkg("shared/adapter/deadletter", []string{"shared/adapter/natsx", "shared/domain/event"}),
	}
	if vs := Check(base); len(vs) != 0 {
		t.Fatalf("allowed graph reported: %v", vs)
	}
	cases := []struct {
		name string
		add  Package
		want string // in the one violation
	}{
		{"natsx imports the domain", pkg("shared/adapter/natsx/x", []string{"shared/domain/event"}), "shared/adapter/natsx/x imports " + prefix + "shared/domain/event"},
		{"natsx tests import an adapter built on it", pkg("shared/adapter/natsx/y", nil, "shared/adapter/deadletter"), "shared/adapter/natsx/y tests import " + prefix + "shared/adapter/deadletter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := Check(append(append([]Package(nil), base...), c.add))
			if len(vs) != 1 || !strings.Contains(vs[0], c.want) || !strings.Contains(vs[0], "NATS plumbing") {
				t.Fatalf("got %q, want one violation of the natsx rule containing %q", vs, c.want)
			}
		})
	}
}

// TestEndToEnd runs the loader and the rules on a generated workspace with
// a forbidden import, then on this repository.
func TestEndToEnd(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.work", "go 1.26.8\n\nuse (\n\t./shared\n\t./services/pusher\n)\n")
	write("shared/go.mod", "module "+prefix+"shared\n\ngo 1.26.8\n")
	write("services/pusher/go.mod", "module "+prefix+"services/pusher\n\ngo 1.26.8\n")
	write("services/pusher/push/push.go", "package push\n\nconst Name = \"push\"\n")
	write("shared/domain/event/event.go", "package event\n\nimport _ \""+prefix+"services/pusher/push\"\n")
	pkgs, err := load(root)
	if err != nil {
		t.Fatal(err)
	}
	if vs := Check(pkgs); len(vs) == 0 || !strings.Contains(vs[0], "shared/domain/event imports "+prefix+"services/pusher/push") {
		t.Fatalf("forbidden import: got %q", vs)
	}

	pkgs, err = load("../..")
	if err != nil {
		t.Fatal(err)
	}
	if vs := Check(pkgs); len(vs) != 0 {
		t.Fatalf("this repository breaks module boundaries:\n%s", strings.Join(vs, "\n"))
	}
}
