package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// TestJSForce drives the sandbox with jsforce (npm), a Salesforce client
// written outside this project, so the emulator is checked against more
// than the client it was built next to: client credentials, a SOQL query
// over several pages, a collection update and a Bulk API 2.0 query, each
// resolved against instance_url as jsforce does.
func TestJSForce(t *testing.T) {
	if testing.Short() && os.Getenv("OPTOUT_REQUIRE_JSFORCE") != "1" {
		t.Skip("installs jsforce from npm and runs node: skipped under -short; make test and make test-jsforce run it")
	}
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = exec.LookPath("npm")
	}
	if err != nil {
		if os.Getenv("OPTOUT_REQUIRE_JSFORCE") == "1" {
			t.Fatalf("OPTOUT_REQUIRE_JSFORCE=1 but node or npm is missing: %v", err)
		}
		t.Skipf("node and npm are needed to run jsforce (%v); set OPTOUT_REQUIRE_JSFORCE=1 to fail instead", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := filepath.Abs("jsforce-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "jsforce")); err != nil {
		// The versions of package-lock.json, from the npm registry; kept
		// in the folder for the next run.
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}

	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{
		{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	l := sandbox.ServeLocal(sb, nil)
	defer l.Close()
	org := sb.Org("acme")
	org.Seed(sandbox.SeedSpec{Contacts: 450, Leads: 10})
	missing, _ := sandbox.To18("003000000000001")

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, "drive.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SB_ORG_URL="+l.OrgURL("acme"), "SB_CLIENT_ID=acme-id",
		"SB_CLIENT_SECRET=acme-secret", "SB_MISSING_ID="+missing)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node drive.mjs: %v\n%s", err, stderr.String())
	}
	var got struct {
		InstanceURL string   `json:"instanceUrl"`
		TotalSize   int      `json:"totalSize"`
		Fetched     int      `json:"fetched"`
		Updated     []string `json:"updated"`
		Failed      []struct {
			Errors []struct {
				StatusCode string `json:"statusCode"`
			} `json:"errors"`
		} `json:"failed"`
		BulkOptedOut []string `json:"bulkOptedOut"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("drive.mjs output %q: %v", stdout.String(), err)
	}

	if got.InstanceURL != l.OrgURL("acme") {
		t.Errorf("jsforce instanceUrl %q, want the org's origin %q", got.InstanceURL, l.OrgURL("acme"))
	}
	if got.TotalSize != 450 || got.Fetched != 450 {
		t.Errorf("query: totalSize %d, fetched %d; want 450 each", got.TotalSize, got.Fetched)
	}
	routes := map[string]int{}
	for _, c := range org.Calls() {
		routes[c.Route]++
	}
	if routes[sandbox.RouteQueryMore] < 2 {
		t.Errorf("autoFetch followed %d nextRecordsUrl pages, want 2 (450 rows, 200 a page)", routes[sandbox.RouteQueryMore])
	}
	if len(got.Failed) != 1 || len(got.Failed[0].Errors) != 1 || got.Failed[0].Errors[0].StatusCode != "NOT_FOUND" {
		t.Errorf("allOrNone=false update: failures %+v, want the missing id's NOT_FOUND only", got.Failed)
	}
	// What jsforce changed is in the org, and nothing else.
	var optedOut []string
	for _, r := range org.Records() {
		if r.HasOptedOutOfEmail {
			optedOut = append(optedOut, r.ID)
		}
	}
	slices.Sort(got.Updated)
	if len(got.Updated) != 3 || !slices.Equal(optedOut, got.Updated) {
		t.Errorf("opted out in the org %v, jsforce updated %v; want the same 3", optedOut, got.Updated)
	}
	slices.Sort(got.BulkOptedOut)
	if !slices.Equal(got.BulkOptedOut, optedOut) {
		t.Errorf("bulk2.query read %v, want %v", got.BulkOptedOut, optedOut)
	}
	if routes[sandbox.RouteBulkQueryCreate] != 1 || routes[sandbox.RouteBulkQueryResults] < 1 {
		t.Errorf("bulk routes called: %v", routes)
	}
}
