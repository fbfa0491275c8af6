package root_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
)

// `optoutctl tenant check` builds its Salesforce client under the same
// endpoint rule as the pusher and the reconciler (issue 20): a plain-http
// token URL is refused before any request, and an instance_url off the
// tenant's My Domain and Salesforce's hosts gets no token; both say what to
// fix. The names end in .invalid, so nothing could leave the machine anyway.
func TestTenantCheckRefusesUnsafeEndpoints(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.Run("tenant", "set", "acme", "--sync=true").Expect(t, 0)

	s.Env["SF_ACME_TOKEN_URL"] = "http://acme.my.salesforce.invalid"
	r := s.Run("tenant", "check", "acme")
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "plain http") {
		t.Fatalf("tenant check with a plain-http token URL: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	var dataCalls atomic.Int64
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/services/oauth2/token" {
			dataCalls.Add(1)
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"access_token": "00Dxx0000001gPL!tok", "instance_url": "https://evil.attacker.invalid"})
	}))
	defer foreign.Close()
	s.Env["SF_ACME_TOKEN_URL"] = foreign.URL
	r = s.Run("tenant", "check", "acme")
	out := r.Stdout + r.Stderr
	if r.Code == 0 || !strings.Contains(out, "evil.attacker.invalid") || !strings.Contains(out, "My Domain") {
		t.Fatalf("tenant check with a foreign instance_url: exit %d\n%s", r.Code, out)
	}
	if strings.Contains(out, "00Dxx0000001gPL!tok") {
		t.Fatalf("the token is printed:\n%s", out)
	}
	t.Logf("what the operator sees:\n%s", out)
	if dataCalls.Load() != 0 {
		t.Fatalf("%d data calls reached the token host", dataCalls.Load())
	}
}
