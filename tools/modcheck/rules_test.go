package main

import (
	"os"
	"path/filepath"
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
		pkg("shared/sfcreds", []string{"fmt"}),
		pkg("shared/salesforce", []string{"net/http", "proto/optout/v1"}, "services/sfsandbox/sandbox"),
		pkg("services/sfsandbox/sandbox", []string{"net/http"}),
		pkg("services/sfsandbox", []string{"services/sfsandbox/sandbox"}),
		pkg("internal/testsandbox", []string{"services/sfsandbox/sandbox", "shared/sfcreds"}),
		pkg("services/pusher/push", []string{"shared/sfcreds"}, "internal/testsandbox"),
		pkg("services/reconciler/service", []string{"shared/sfcreds"}, "internal/testsandbox"),
		pkg("services/reconciler/cmd/reconbench", []string{"services/reconciler/service", "services/sfsandbox/sandbox"}),
		pkg("services/optoutctl/internal/testkit", []string{"services/pusher/push", "services/reconciler/service"}),
		pkg("services/optoutctl/internal/root", []string{"shared/sfcreds"}, "services/optoutctl/internal/testkit", "services/reconciler/service"),
		pkg("services/demo/stack", []string{"services/pusher/app", "services/sfsandbox/sandbox"}),
		pkg("services/pusher/app", []string{"services/pusher/push"}),
	}
	if vs := Check(base); len(vs) != 0 {
		t.Fatalf("allowed graph reported: %v", vs)
	}
	cases := []struct {
		name string
		add  Package
		want string // in the one violation
	}{
		{"shared imports a service", pkg("shared/telemetry", []string{"services/pusher/push"}), "shared/telemetry imports " + prefix + "services/pusher/push"},
		{"shared imports another module of ours", pkg("shared/lock", []string{"internal/testsandbox"}), "shared/lock imports " + prefix + "internal/testsandbox"},
		{"shared tests use a service other than the emulator", pkg("shared/ledger", nil, "services/pusher/push"), "shared/ledger tests import"},
		{"the emulator imports shared", pkg("services/sfsandbox/sandbox/x", []string{"shared/sfcreds"}), "the emulator depends on nothing of ours"},
		{"the emulator's tests import shared", pkg("services/sfsandbox/sandbox/y", nil, "shared/sfcreds"), "tests import"},
		{"the pusher imports the reconciler", pkg("services/pusher/other", []string{"services/reconciler/service"}), "services/pusher/other imports " + prefix + "services/reconciler/service (no service imports another"},
		{"the reconciler's tests import the pusher", pkg("services/reconciler/app", nil, "services/pusher/push"), "reconciler/app tests import"},
		{"the CLI imports the pusher outside its test harness", pkg("services/optoutctl/internal/conn", []string{"services/pusher/push"}), "optoutctl/internal/conn imports"},
		{"the pusher imports the CLI", pkg("services/pusher/cli", []string{"services/optoutctl/internal/root"}), "no service imports another"},
		{"a new service imports the pusher", pkg("services/admin/page", []string{"services/pusher/app"}), "services/admin/page imports"},
		{"a new service's tests import the reconciler", pkg("services/admin/page2", nil, "services/reconciler/service"), "services/admin/page2 tests import"},
		{"the demo imports the reconciler", pkg("services/demo/more", []string{"services/reconciler/service"}), "the demo runs the pusher"},
		{"the reconciler's bench imports the pusher", pkg("services/reconciler/cmd/reconbench/x", []string{"services/pusher/push"}), "benchmark"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := Check(append(append([]Package(nil), base...), c.add))
			if len(vs) != 1 || !strings.Contains(vs[0], c.want) {
				t.Fatalf("got %q, want one violation containing %q", vs, c.want)
			}
		})
	}
}

// TestNatsxImportsNoDomain: the NATS layer may use the platform (config,
// telemetry, logs) and nothing else of ours, in its code or its tests.
func TestNatsxImportsNoDomain(t *testing.T) {
	base := []Package{
		pkg("proto/optout/v1", nil),
		pkg("shared/logx", []string{"fmt"}),
		pkg("shared/telemetry", []string{"shared/logx"}),
		pkg("shared/config", []string{"shared/logx"}),
		pkg("shared/natsx", []string{"shared/config", "shared/telemetry"}, "shared/natsx/natstest"),
		pkg("shared/natsx/natstest", []string{"shared/natsx"}),
		pkg("shared/event", []string{"proto/optout/v1"}),
		pkg("shared/deadletter", []string{"shared/natsx", "shared/event"}),
	}
	if vs := Check(base); len(vs) != 0 {
		t.Fatalf("allowed graph reported: %v", vs)
	}
	cases := []struct {
		name string
		add  Package
		want string // in the one violation
	}{
		{"natsx imports the domain", pkg("shared/natsx/x", []string{"shared/event"}), "shared/natsx/x imports " + prefix + "shared/event"},
		{"natsx tests import an adapter built on it", pkg("shared/natsx/y", nil, "shared/deadletter"), "shared/natsx/y tests import " + prefix + "shared/deadletter"},
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
	write("shared/event/event.go", "package event\n\nimport _ \""+prefix+"services/pusher/push\"\n")
	pkgs, err := load(root)
	if err != nil {
		t.Fatal(err)
	}
	if vs := Check(pkgs); len(vs) != 1 || !strings.Contains(vs[0], "shared/event imports "+prefix+"services/pusher/push") {
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
