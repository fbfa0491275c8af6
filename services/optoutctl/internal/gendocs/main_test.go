package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommittedReferenceIsCurrent is make docs-check inside make test: the
// committed docs/optoutctl/ is what the command tree says today.
func TestCommittedReferenceIsCurrent(t *testing.T) {
	ref, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := Check("../../../../docs/optoutctl", ref); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"optoutctl.md", "optoutctl_tenant_show.md", "optoutctl_dlq_replay.md", "optoutctl_completion_bash.md"} {
		if _, ok := ref[page]; !ok {
			t.Errorf("the reference has no page %s", page)
		}
	}
	if show := string(ref["optoutctl_tenant_show.md"]); !strings.Contains(show, "optoutctl tenant show <tenant> [--no-check] [--no-ledger] [flags]") ||
		!strings.Contains(show, "--no-ledger") || !strings.Contains(show, "-o, --output format") {
		t.Errorf("tenant show's page lacks its synopsis or flags:\n%s", show)
	}
	if strings.Contains(string(ref["optoutctl_tenant.md"]), "optoutctl tenant [flags]") {
		t.Errorf("a group's page shows a synopsis to run it:\n%s", ref["optoutctl_tenant.md"])
	}
	for name, b := range ref {
		if strings.Contains(string(b), "Auto generated") {
			t.Errorf("%s carries the day it was generated, so it would always be stale", name)
		}
	}
}

// TestCheckFailsWhenStale: a changed page, a missing one and one of a
// command that is gone each fail the check, named; Write makes the
// directory current again.
func TestCheckFailsWhenStale(t *testing.T) {
	ref, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Write(dir, ref); err != nil {
		t.Fatal(err)
	}
	if err := Check(dir, ref); err != nil {
		t.Fatalf("fresh reference: %v", err)
	}
	page := filepath.Join(dir, "optoutctl_tenant_show.md")
	if err := os.WriteFile(page, []byte("## optoutctl tenant show\n\nan older text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "optoutctl_dlq_purge.md")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "optoutctl_tenant_remove.md"), []byte("## optoutctl tenant remove\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Check(dir, ref)
	if err == nil {
		t.Fatal("a stale reference passes the check")
	}
	for _, want := range []string{"optoutctl_tenant_show.md differs", "optoutctl_dlq_purge.md is missing", "optoutctl_tenant_remove.md is of no command", "run make docs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if err := Write(dir, ref); err != nil {
		t.Fatal(err)
	}
	if err := Check(dir, ref); err != nil {
		t.Fatalf("after Write: %v", err)
	}
}
