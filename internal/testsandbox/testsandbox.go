// Package testsandbox serves the Salesforce sandbox to the services' tests
// and gives the credential variables that point them at it. It lives in its
// own module, outside shared/, so shared never depends on a service.
package testsandbox

import (
	"maps"
	"net/http"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
)

// TB is what Serve needs of its caller: testing.TB has it, and so has the
// runner of a program built on the test stack (bench/chaos).
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Serve runs a sandbox with orgs on loopback until the test ends, each org
// on its own origin. It returns the sandbox, the control API's URL and the
// SF_<TENANT>_* variables (client credentials) of every org.
func Serve(t TB, orgs []sandbox.OrgConfig) (*sandbox.Sandbox, string, map[string]string) {
	t.Helper()
	return ServeWith(t, orgs, nil)
}

// ServeWith is Serve with wrap (when not nil) around every handler, for a
// test that must see each request as it reaches the emulator (the cluster
// test records every write's values in the order Salesforce applied them).
func ServeWith(t TB, orgs []sandbox.OrgConfig, wrap func(http.Handler) http.Handler) (*sandbox.Sandbox, string, map[string]string) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Orgs: orgs})
	if err != nil {
		t.Fatal(err)
	}
	l := sandbox.ServeLocal(sb, wrap)
	t.Cleanup(l.Close)
	env := map[string]string{}
	for _, o := range orgs {
		maps.Copy(env, sfcreds.Env(o.Name, l.OrgURL(o.Name), o.ClientID, o.ClientSecret))
	}
	return sb, l.URL(), env
}
