// Package sfcredstest serves the Salesforce sandbox to tests and gives the
// credential variables that point the services at it.
package sfcredstest

import (
	"maps"
	"net/http/httptest"
	"testing"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/sfcreds"
)

// Serve runs a sandbox with orgs over HTTP until the test ends. It returns
// the sandbox, its URL and the SF_<TENANT>_* variables (client credentials)
// of every org.
func Serve(t testing.TB, orgs []sandbox.OrgConfig) (*sandbox.Sandbox, string, map[string]string) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Orgs: orgs})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	env := map[string]string{}
	for _, o := range orgs {
		maps.Copy(env, sfcreds.Env(o.Name, srv.URL+"/orgs/"+o.Name, o.ClientID, o.ClientSecret))
	}
	return sb, srv.URL, env
}
