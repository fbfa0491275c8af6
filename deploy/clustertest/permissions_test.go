package clustertest

import (
	"context"
	"errors"
	"fmt"
	"github.com/optout-sync/optout-sync/internal/harness"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/event"
)

// role is one entry of the chart's nats.authorization example.
type role struct {
	Publish        []string `yaml:"publish"`
	Subscribe      []string `yaml:"subscribe"`
	AllowResponses bool     `yaml:"allowResponses"`
}

// chartRoles reads the example the chart ships, so the test runs exactly
// what deploy/README.md tells operators to configure.
func chartRoles(t *testing.T, root string) map[string]role {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "helm", "optout-sync", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		NATS struct {
			Authorization map[string]role `yaml:"authorization"`
		} `yaml:"nats"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	for _, r := range []string{"publisher", "pusher", "reconciler", "optoutctl"} {
		if _, ok := v.NATS.Authorization[r]; !ok {
			t.Fatalf("values.yaml nats.authorization has no %s role", r)
		}
	}
	return v.NATS.Authorization
}

// serverConfig is a nats-server configuration with one user per role (a
// publisher per tenant), each with its password = its name + "-pw".
func serverConfig(port int, storeDir string, roles map[string]role, tenants []string) string {
	quote := func(list []string, tenant string) string {
		q := make([]string, len(list))
		for i, s := range list {
			q[i] = fmt.Sprintf("%q", strings.ReplaceAll(s, "<tenant>", tenant))
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var users []string
	add := func(user string, r role, tenant string) {
		resp := ""
		if r.AllowResponses {
			resp = ", allow_responses: true"
		}
		users = append(users, fmt.Sprintf("    {user: %q, password: %q, permissions: {publish: {allow: %s}, subscribe: {allow: %s}%s}}",
			user, user+"-pw", quote(r.Publish, tenant), quote(r.Subscribe, tenant), resp))
	}
	for _, tn := range tenants {
		add("publisher-"+tn, roles["publisher"], tn)
	}
	for _, name := range []string{"pusher", "reconciler", "optoutctl"} {
		add(name, roles[name], "")
	}
	return fmt.Sprintf("listen: 127.0.0.1:%d\njetstream: {store_dir: %q}\nauthorization: {\n  users: [\n%s\n  ]\n}\n",
		port, storeDir, strings.Join(users, ",\n"))
}

// TestNATSPermissionsPerRole runs the chart's example authorization on a
// real nats-server (issue 20): a tenant's publisher is refused on another
// tenant's subject, the pusher and the reconciler run (provision, consume,
// dead-letter, serve) with only their own permissions, and an event whose
// body names another tenant than its subject is dead-lettered.
func TestNATSPermissionsPerRole(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and the services, which need Redis: not in the fast tier (-short)")
	}
	root := repoRoot(t)
	roles := chartRoles(t, root)
	dir := t.TempDir()
	ps := newProcs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	port := freePort(t)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(serverConfig(port, filepath.Join(dir, "js"), roles, []string{"acme", "globex"})), 0o600); err != nil {
		t.Fatal(err)
	}
	natsLog := filepath.Join(dir, "nats.log")
	srv := ps.add("nats-server", natsServerBin(t, root), natsLog, nil, "-c", conf)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	connect := func(user string, opts ...nats.Option) *nats.Conn {
		t.Helper()
		var nc *nats.Conn
		err := poll(ctx, time.Minute, 50*time.Millisecond, func(context.Context) error {
			var err error
			nc, err = nats.Connect(url, append([]nats.Option{nats.UserInfo(user, user+"-pw")}, opts...)...)
			return err
		})
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// The operator's view, for checks only.
	op := connect("optoutctl")
	opJS, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	topo := natsx.DefaultTopology()
	topo.Storage = jetstream.MemoryStorage

	// The real services, each as its own user.
	pusherBin := build(t, root, dir, "./services/pusher", "pusher")
	reconcilerBin := build(t, root, dir, "./services/reconciler", "reconciler")
	service := func(name, bin, user string, extra ...string) {
		admin := freePort(t)
		env := append(os.Environ(), "NATS_URL="+url, "NATS_USER="+user, "NATS_PASSWORD="+user+"-pw",
			"OPTOUT_NATS_STORAGE=memory", fmt.Sprintf("OPTOUT_ADMIN_ADDR=127.0.0.1:%d", admin),
			"OPTOUT_SF_CREDENTIALS_DIR="+filepath.Join(dir, "no-credentials"), "OPTOUT_DISCOVERY_INTERVAL=100ms",
			"OPTOUT_EMAIL_HASH_KEY=permissions-test-email-hash-key-0123456789")
		p := ps.add(name, bin, filepath.Join(dir, name+".log"), append(env, extra...))
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
			if !p.Running() {
				return errors.New(name + " exited")
			}
			return harness.HTTPOK(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", admin))
		}); err != nil {
			t.Fatalf("%s with its own permissions: %v", name, err)
		}
	}
	service("pusher", pusherBin, "pusher")
	redis := os.Getenv("REDIS_ADDR")
	if redis == "" {
		redis = "127.0.0.1:6379"
	}
	service("reconciler", reconcilerBin, "reconciler", "OPTOUT_REDIS_URL=redis://"+redis+"/0",
		"OPTOUT_LOCK_PREFIX=permtest:"+filepath.Base(dir)+":")

	// Tenant acme's publisher: its own subject works; globex's is refused.
	refused := make(chan error, 4)
	acme := connect("publisher-acme", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused <- err }))
	acmeJS, err := jetstream.New(acme)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(id, tenant string) *nats.Msg {
		data, ct, err := event.Encode(&optoutv1.OptOutEvent{EventId: id, TenantId: tenant,
			Person: &optoutv1.Person{SalesConnectId: "sc-" + id, SalesforceId: "003000000000001AAA", Email: id + "@example.com", ObjectType: optoutv1.ObjectType_CONTACT},
			Action: optoutv1.Action_UNSUBSCRIBE, Source: optoutv1.Source_EMAIL_LINK, OccurredAt: timestamppb.Now()}, false)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg("")
		m.Data = data
		m.Header.Set(event.HeaderContentType, ct)
		m.Header.Set(jetstream.MsgIDHeader, id)
		return m
	}
	own := ev("own-1", "acme")
	own.Subject = topo.EventsSubject("acme")
	if _, err := acmeJS.PublishMsg(ctx, own); err != nil {
		t.Fatalf("publisher-acme on its own subject: %v", err)
	}
	foreign := ev("foreign-1", "globex")
	foreign.Subject = topo.EventsSubject("globex")
	if err := acme.PublishMsg(foreign); err != nil {
		t.Fatal(err)
	}
	_ = acme.Flush()
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), topo.EventsSubject("globex")) {
			t.Fatalf("publisher-acme on globex's subject: %v; want a permissions violation", err)
		}
	case <-ctx.Done():
		t.Fatal("publisher-acme's publish on globex's subject was not refused")
	}

	// A body naming globex on acme's subject: accepted by the broker (it
	// is acme's subject), dead-lettered by the pusher.
	spoof := ev("spoof-1", "globex")
	spoof.Subject = topo.EventsSubject("acme")
	if _, err := acmeJS.PublishMsg(ctx, spoof); err != nil {
		t.Fatalf("publisher-acme on its own subject: %v", err)
	}
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		s, err := opJS.Stream(ctx, topo.DLQStream())
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(ctx, topo.DLQSubject("acme"))
		if err != nil {
			return fmt.Errorf("no dead letter on %s: %w", topo.DLQSubject("acme"), err)
		}
		if code := m.Header.Get(event.HeaderErrorCode); code != "tenant_mismatch" {
			return fmt.Errorf("dead letter with code %q, want tenant_mismatch: %v", code, m.Header)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The pusher's user cannot inject events, nor the reconciler's.
	for _, user := range []string{"pusher", "reconciler"} {
		errs := make(chan error, 4)
		nc := connect(user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		m := ev(user+"-inject", "acme")
		m.Subject = topo.EventsSubject("acme")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s publishing an event: %v; want a permissions violation", user, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s could publish an event", user)
		}
	}

	// Nothing the services did was refused: they run on their own lists.
	logText, _ := os.ReadFile(natsLog)
	if !strings.Contains(string(logText), `user:publisher-acme" - Publish Violation`) {
		t.Fatalf("the server log does not show the refusal above, so it cannot show a service's either:\n%s", logText)
	}
	for _, line := range strings.Split(string(logText), "\n") {
		if strings.Contains(line, "Violation") && !strings.Contains(line, topo.EventsSubject("acme")) &&
			(strings.Contains(line, `user:pusher"`) || strings.Contains(line, `user:reconciler"`)) {
			t.Errorf("a service was refused something it uses: %s", line)
		}
	}
}
