// Package stack starts a whole local optout-sync in one process: NATS (the
// machine's, or an embedded JetStream server when none answers), the
// Salesforce sandbox with seeded orgs, a pusher replica and the admin service
// (the settings page) with a generated login.
package stack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	adminapp "github.com/optout-sync/optout-sync/services/admin/app"
	"github.com/optout-sync/optout-sync/services/pusher/app"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Options shape the stack.
type Options struct {
	NATSURL        string
	SandboxListen  string
	AdminListen    string   // the pusher's admin port (/metrics)
	PageListen     string   // the admin service: the settings page under /admin/
	Tenants        []string // org names; the first uses the sales opt-out field
	RecordsPerOrg  int
	SandboxLatency time.Duration
	Namespace      string
	Log            zerolog.Logger
}

// Stack is the running local system.
type Stack struct {
	Opts       Options
	NC         *nats.Conn
	Sandbox    *sandbox.Sandbox
	SandboxURL string // control API; each org has its own origin (Sandbox.Org(name).URL())
	Pusher     *app.App
	// Admin serves the settings page; sign in as AdminUser with the
	// password in AdminPasswordFile (generated for this run, never printed).
	Admin             *adminapp.App
	AdminUser         string
	AdminPasswordFile string
	Topology          natsx.Topology
	Embedded          bool
	// Passed over says why the server at Options.NATSURL was not used
	// (it answered, but is older than natsx.MinServerVersion); empty when
	// none answered or it was used.
	PassedOver string

	closers []func()
}

// Start brings everything up; Close takes it down.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	s := &Stack{Opts: o}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.startNATS(o.NATSURL); err != nil {
		return nil, err
	}
	if err := s.startSandbox(o); err != nil {
		return nil, err
	}
	credsDir, err := os.MkdirTemp("", "optout-demo-creds-")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = os.RemoveAll(credsDir) })
	for _, t := range o.Tenants {
		oc := s.Sandbox.Org(t).Config()
		if err := writeCreds(filepath.Join(credsDir, t), s.Sandbox.Org(t).URL(), oc.ClientID, oc.ClientSecret); err != nil {
			return nil, err
		}
	}

	env := map[string]string{
		"NATS_URL":                  s.NC.ConnectedUrl(),
		"OPTOUT_NAMESPACE":          o.Namespace,
		"OPTOUT_ADMIN_ADDR":         o.AdminListen,
		"OPTOUT_SF_CREDENTIALS_DIR": credsDir,
		"OPTOUT_NATS_STORAGE":       "memory",
	}
	l := config.FromMap(env)
	cfg := app.Load(l)
	if err := l.Err(); err != nil {
		return nil, err
	}
	s.Topology = cfg.Topology
	a, err := app.New(ctx, cfg, o.Log)
	if err != nil {
		return nil, fmt.Errorf("pusher: %w", err)
	}
	s.Pusher = a
	s.closers = append(s.closers, a.Close)
	if err := s.startAdmin(ctx, env, credsDir, o); err != nil {
		return nil, err
	}

	// The first tenant shows the sales field; the others the default.
	kv, err := a.Service.JS.KeyValue(ctx, s.Topology.TenantsBucket())
	if err != nil {
		return nil, err
	}
	for i, t := range o.Tenants {
		st := tenant.Default(t)
		st.SyncEnabled = true
		if i == 0 {
			st.Field = tenant.SalesOptOut
		}
		if err := (tenant.Store{KV: kv}).Put(ctx, st); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// startAdmin wires the admin service as its main does, with a login made
// for this run: user "admin" and a random password in a file only this user
// can read (the demo prints the file's path, not the password).
func (s *Stack) startAdmin(ctx context.Context, env map[string]string, credsDir string, o Options) error {
	dir, err := os.MkdirTemp("", "optout-demo-admin-")
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = os.RemoveAll(dir) })
	s.AdminUser = "admin"
	password := rand.Text() // 26 characters, above the page's minimum of 16
	s.AdminPasswordFile = filepath.Join(dir, "password")
	if err := os.WriteFile(s.AdminPasswordFile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte(s.AdminUser+":"+password+"\n"), 0o600); err != nil {
		return err
	}
	vars := map[string]string{
		"NATS_URL":                  env["NATS_URL"],
		"OPTOUT_NAMESPACE":          env["OPTOUT_NAMESPACE"],
		"OPTOUT_NATS_STORAGE":       env["OPTOUT_NATS_STORAGE"],
		"OPTOUT_ADMIN_ADDR":         o.PageListen,
		"OPTOUT_ADMIN_USERS_FILE":   users,
		"OPTOUT_SF_CREDENTIALS_DIR": credsDir,
	}
	l := config.FromMap(vars)
	cfg := adminapp.Load(l)
	if err := l.Err(); err != nil {
		return err
	}
	a, err := adminapp.New(ctx, cfg, o.Log)
	if err != nil {
		return fmt.Errorf("admin service: %w", err)
	}
	s.Admin = a
	s.closers = append(s.closers, a.Close)
	return nil
}

func (s *Stack) startNATS(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.Name("optout-demo"))
	if err == nil {
		// A server older than the supported minimum (a distribution's
		// 2.9, say) is passed over for the embedded one, the pinned
		// current release, so the demo shows what users run.
		verr := natsx.CheckServerVersion(nc.ConnectedServerVersion())
		if _, jerr := nc.JetStream(); jerr == nil && verr == nil {
			s.NC = nc
			s.closers = append(s.closers, nc.Close)
			return nil
		}
		if verr != nil {
			s.PassedOver = verr.Error()
		}
		nc.Close()
	}
	// No usable server answers: run JetStream in-process so the demo needs nothing installed.
	dir, err := os.MkdirTemp("", "optout-demo-nats-")
	if err != nil {
		return err
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("embedded nats did not start")
	}
	s.Embedded = true
	s.closers = append(s.closers, func() { ns.Shutdown(); ns.WaitForShutdown(); _ = os.RemoveAll(dir) })
	nc, err = nats.Connect(ns.ClientURL(), nats.Name("optout-demo"))
	if err != nil {
		return err
	}
	s.NC = nc
	s.closers = append(s.closers, nc.Close)
	return nil
}

func (s *Stack) startSandbox(o Options) error {
	var orgs []sandbox.OrgConfig
	for i, t := range o.Tenants {
		orgs = append(orgs, sandbox.OrgConfig{
			Name: t, ClientID: t + "-client", ClientSecret: t + "-secret", APIVersions: []string{"62.0"},
			DailyAPILimit: 1_000_000, CustomField: tenant.DefaultCustomField,
			CustomFieldInstalled: i == 0, CustomFieldWritable: i == 0,
		})
	}
	sb, err := sandbox.New(sandbox.Config{Orgs: orgs})
	if err != nil {
		return err
	}
	for _, t := range o.Tenants {
		org := sb.Org(t)
		org.Seed(sandbox.SeedSpec{Contacts: o.RecordsPerOrg / 2, Leads: o.RecordsPerOrg - o.RecordsPerOrg/2})
		org.SetLatency(o.SandboxLatency)
	}
	ln, err := net.Listen("tcp", o.SandboxListen)
	if err != nil {
		return fmt.Errorf("sandbox listen %s: %w", o.SandboxListen, err)
	}
	s.serve(ln, sb)
	s.Sandbox = sb
	s.SandboxURL = dialURL(ln)
	// Each org on its own origin (a free port of the same host), as a real
	// org's My Domain: its instance_url is then a bare origin.
	host, _, err := net.SplitHostPort(o.SandboxListen)
	if err != nil {
		return fmt.Errorf("sandbox listen %s: %w", o.SandboxListen, err)
	}
	for _, t := range o.Tenants {
		oln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return fmt.Errorf("sandbox listen for org %s: %w", t, err)
		}
		s.serve(oln, sb.OrgHandler(t))
		sb.Org(t).SetURL(dialURL(oln))
	}
	return nil
}

func (s *Stack) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.closers = append(s.closers, func() { _ = srv.Close() })
}

// dialURL is how this machine reaches ln ("[::]" is not dialable everywhere).
func dialURL(ln net.Listener) string {
	return "http://" + strings.Replace(ln.Addr().String(), "[::]", "127.0.0.1", 1)
}

func writeCreds(dir, tokenURL, id, secret string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, v := range map[string]string{"token_url": tokenURL, "client_id": id, "client_secret": secret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Close stops everything in reverse order.
func (s *Stack) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
