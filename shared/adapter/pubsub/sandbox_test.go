package pubsub

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/internal/sandboxproc"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// The sandbox runs as its own process (internal/sandboxproc): its Go API
// would link its copy of the generated Pub/Sub API into this test binary
// next to ours, and the protobuf runtime refuses two registrations of
// eventbus.v1 (see package pubsubapi).

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxproc.Cleanup()
	os.Exit(code)
}

// Credentials of the sandbox org (test values, not secrets).
const (
	testClientID = sandboxproc.ClientID
	ourClient    = "optout-sync-test"
)

// sandbox is one running sfsandbox process with org "acme".
type sandbox struct {
	*sandboxproc.Sandbox
	t          *testing.T
	orgURL     string // the org's origin: token URL and instance URL
	pubsubAddr string
}

// startSandbox runs the sandbox until the test ends; behavior is the org's
// behavior block in YAML (indented by six spaces), may be "".
func startSandbox(t *testing.T, behavior string) *sandbox {
	t.Helper()
	p := sandboxproc.Start(t, behavior)
	return &sandbox{Sandbox: p, t: t, orgURL: p.OrgURL, pubsubAddr: p.PubSubAddr}
}

func (sb *sandbox) ctl(method, path string, body any, out any) {
	sb.t.Helper()
	sb.Ctl(method, path, body, out)
}

func (sb *sandbox) put(typ, email string) string {
	sb.t.Helper()
	return sb.Put(typ, email)
}

// salesforceClient is the tenant's REST client for the sandbox org; its
// Sforce-Call-Options client is ourClient.
func (sb *sandbox) salesforceClient(t *testing.T) *salesforce.Client {
	t.Helper()
	return sb.SalesforceClient(ourClient)
}

// client is a Pub/Sub client for the org, plaintext over loopback.
func (sb *sandbox) client(t *testing.T) (*Client, *salesforce.Client) {
	t.Helper()
	sf := sb.salesforceClient(t)
	c, err := New(sf, Config{Addr: sb.pubsubAddr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, sf
}

func (sb *sandbox) latestReplayID() []byte { sb.t.Helper(); return sb.LatestReplayID() }

func (sb *sandbox) allocationUsed() int { sb.t.Helper(); return sb.AllocationUsed() }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
