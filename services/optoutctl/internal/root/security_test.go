package root_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
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

	s.Env.Set("SF_ACME_TOKEN_URL", "http://acme.my.salesforce.invalid")
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
	s.Env.Set("SF_ACME_TOKEN_URL", foreign.URL)
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

// The pusher (the real push.Service, with the pool the binary builds) holds
// a tenant whose token URL is plain http at a foreign host: unhealthy, with a
// reason an admin can act on, and its opt-out waits; no request is made (the
// host ends in .invalid, and the client refuses before dialing).
func TestPusherHoldsTenantWithUnsafeTokenURL(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.Env.Set("SF_ACME_TOKEN_URL", "http://acme.my.salesforce.invalid")
	s.Run("tenant", "set", "acme", "--sync=true").Expect(t, 0)
	s.StartPusher()
	id := s.Seed("acme", "Contact", "held@example.com")
	pub := natsx.Publisher{JS: s.Prov.JS, Topology: s.Topo}
	if _, err := eventstream.PublishEvent(s.Ctx, pub, &optoutv1.OptOutEvent{EventId: "held-1", TenantId: "acme",
		Person: &optoutv1.Person{SalesConnectId: "sc-held", SalesforceId: id, Email: "held@example.com", ObjectType: optoutv1.ObjectType_CONTACT},
		Action: optoutv1.Action_UNSUBSCRIBE, Source: optoutv1.Source_EMAIL_LINK, OccurredAt: timestamppb.New(testkit.T0)}, false); err != nil {
		t.Fatal(err)
	}
	var reason string
	s.Eventually("acme unhealthy", func() bool {
		h, err := s.Health.Get(s.Ctx, "acme")
		reason = h.Reason
		return err == nil && h.Mode == tenant.ModeUnhealthy
	})
	if !strings.Contains(reason, "plain http") || !strings.Contains(reason, "https") {
		t.Fatalf("unhealthy reason %q does not say what to fix", reason)
	}
	t.Logf("reason: %s", reason)
}
