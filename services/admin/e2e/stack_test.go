package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/internal/teststack/pushstack"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/admin/app"
	"github.com/optout-sync/optout-sync/services/pusher/push"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/eventstream"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// orgs of the sandbox: acme has the sales opt-out field.
var orgs = []sandbox.OrgConfig{
	{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", DailyAPILimit: 100000, CustomFieldInstalled: true, CustomFieldWritable: true},
}

// stack is one test's system: the shared test stack (internal/teststack),
// and on demand a pusher replica and the admin service.
type stack struct {
	*teststack.Stack
	t *testing.T
	// Cache is the running pusher's view of the settings: the test waits on
	// it to know a change has reached the pusher.
	Cache *tenant.Cache
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return &stack{Stack: teststack.New(t, orgs, teststack.Options{Within: 80 * time.Second}), t: t}
}

// startPusher runs a real pusher replica until the test ends.
func (s *stack) startPusher() {
	s.t.Helper()
	cfg := push.DefaultConfig()
	cfg.HealthRecheck = 200 * time.Millisecond
	cfg.DiscoveryInterval = 50 * time.Millisecond
	s.Cache = pushstack.Start(s.Stack, cfg, pushstack.Options{ErrorsOnly: true}).Cache
}

// startAdmin runs the admin service as its main does, configured by
// variables only: the login from a users file and the Salesforce
// credentials from a mounted-Secret directory. It returns the page's base URL.
func (s *stack) startAdmin(users string) string {
	s.t.Helper()
	dir := s.t.TempDir()
	usersFile := filepath.Join(dir, "users")
	write := func(path, content string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
	write(usersFile, users)
	for _, o := range orgs {
		// The files a tenant's Secret mounts, holding what its variables hold.
		prefix := "SF_" + strings.ToUpper(o.Name) + "_"
		for file, v := range map[string]string{"token_url": "TOKEN_URL", "client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"} {
			write(filepath.Join(dir, "salesforce", o.Name, file), s.sfVar(prefix+v))
		}
	}
	l := config.FromMap(map[string]string{
		"NATS_URL":                  natstest.URL(),
		"OPTOUT_NAMESPACE":          s.Topo.Namespace,
		"OPTOUT_NATS_STORAGE":       "memory",
		"OPTOUT_NATS_REPLICAS":      "1",
		"OPTOUT_ADMIN_ADDR":         "127.0.0.1:0",
		"OPTOUT_ADMIN_USERS_FILE":   usersFile,
		"OPTOUT_SF_CREDENTIALS_DIR": filepath.Join(dir, "salesforce"),
	})
	cfg := app.Load(l)
	if err := l.Err(); err != nil {
		s.t.Fatal(err)
	}
	a, err := app.New(s.Ctx, cfg, zerolog.New(zerolog.NewTestWriter(s.t)).Level(zerolog.WarnLevel))
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.Ctx)
	if err := a.Listen(ctx); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	s.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("admin service: %v", err)
		}
		a.Close()
	})
	return "http://" + a.Admin.Addr()
}

// publish sends one opt-out as Sales Connect would.
func (s *stack) publish(tenantID, salesConnectID, salesforceID, eventID string) {
	s.t.Helper()
	ev := &optoutv1.OptOutEvent{
		EventId: eventID, TenantId: tenantID,
		Person:     &optoutv1.Person{SalesConnectId: salesConnectID, SalesforceId: salesforceID, ObjectType: optoutv1.ObjectType_CONTACT},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.Now(),
		Source:     optoutv1.Source_EMAIL_LINK,
		Reason:     "clicked unsubscribe",
	}
	if _, err := eventstream.PublishEvent(s.Ctx, natsx.Publisher{JS: s.Prov.JS, Topology: s.Topo}, ev, false); err != nil {
		s.t.Fatalf("publish: %v", err)
	}
}

// sfVar is one of the orgs' credential variables.
func (s *stack) sfVar(k string) string {
	v, _ := s.Env.Lookup(k)
	return v
}

// eventually polls cond until it holds, failing the test after a generous
// deadline (a wait, not a timing assertion).
func (s *stack) eventually(what string, cond func() bool) {
	s.t.Helper()
	s.Eventually(what, 20*time.Second, cond)
}
