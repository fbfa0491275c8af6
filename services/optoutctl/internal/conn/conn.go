// Package conn connects optoutctl to the system the services provisioned:
// NATS from the same variables the services read (NATS_URL, NATS_CREDS_FILE,
// OPTOUT_NAMESPACE, ...) and the tenants' Salesforce Secrets from
// OPTOUT_SF_CREDENTIALS_DIR. It binds to existing streams and buckets and
// never creates or reconfigures them: an operator tool with a different
// environment must not rewrite the services' retention or replicas.
package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// DefaultCredentialsDir is where the pusher's Helm chart mounts the Secrets.
const DefaultCredentialsDir = "/etc/optout/salesforce"

// Conn is an open connection to one optout-sync installation.
type Conn struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Topology natsx.Topology
	Tenants  tenant.Store
	Health   tenant.HealthStore
	Ledger   *ledger.Ledger
	// Salesforce finds each tenant's credentials.
	Salesforce sfcreds.Source
	url        string
}

// Open reads the configuration, connects and binds.
func Open(ctx context.Context, inv *cli.Invocation) (*Conn, error) {
	l := config.FromMap(inv.Environ())
	natsCfg := natsx.ConnConfigFromEnv(l, "optoutctl")
	topo := natsx.TopologyFromEnv(l)
	dir := l.String("OPTOUT_SF_CREDENTIALS_DIR", DefaultCredentialsDir, "directory of per-tenant Salesforce Secrets")
	policy := sfcreds.PolicyFromEnv(l)
	if w := policy.Warning(); w != "" {
		fmt.Fprintln(inv.Stderr, "optoutctl: warning:", w)
	}
	if err := l.Err(); err != nil {
		return nil, cli.Usagef("%v", err)
	}
	nc, err := natsx.Connect(natsCfg, zerolog.Nop())
	if err != nil {
		return nil, cli.Failf(err, "%v; check NATS_URL (or --server) and that NATS is running", err)
	}
	c := &Conn{NC: nc, Topology: topo, url: nc.ConnectedUrlRedacted(),
		Salesforce: sfcreds.Source{Dir: dir, Lookup: inv.Getenv, Policy: policy}}
	if c.JS, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, cli.Failf(err, "jetstream: %v", err)
	}
	// Bound, never provisioned: the same handles Provision would return.
	prov := &natsx.Provisioned{Topology: topo, JS: c.JS}
	for _, b := range []struct {
		name string
		dst  *jetstream.KeyValue
	}{
		{topo.TenantsBucket(), &prov.Tenants}, {topo.HealthBucket(), &prov.Health}, {topo.LedgerBucket(), &prov.Ledger},
		{topo.DirtyBucket(), &prov.Dirty}, {topo.AliasBucket(), &prov.Aliases},
	} {
		kv, err := c.JS.KeyValue(ctx, b.name)
		if err != nil {
			nc.Close()
			return nil, c.missing("bucket", b.name, err)
		}
		*b.dst = kv
	}
	for _, s := range []string{topo.EventsStream(), topo.DLQStream(), topo.AuditStream()} {
		if _, err := c.JS.Stream(ctx, s); err != nil {
			nc.Close()
			return nil, c.missing("stream", s, err)
		}
	}
	c.Tenants = tenant.Store{KV: prov.Tenants}
	c.Health = tenant.HealthStore{KV: prov.Health}
	if c.Ledger, err = ledger.New(ctx, prov); err != nil {
		nc.Close()
		return nil, cli.Prereqf("NATS at %s (namespace %q): %v; start the pusher once so it provisions NATS", c.url, topo.Namespace, err)
	}
	return c, nil
}

func (c *Conn) missing(kind, name string, err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return cli.Prereqf("NATS at %s has no %s %s (namespace %q): start the pusher once so it provisions NATS, or set OPTOUT_NAMESPACE (--namespace) to the services' namespace",
			c.url, kind, name, c.Topology.Namespace)
	}
	return cli.Failf(err, "%s %s: %v", kind, name, err)
}

// Close disconnects.
func (c *Conn) Close() { c.NC.Close() }

// Inspector reads tenant status (the same view the admin page shows).
func (c *Conn) Inspector(inv *cli.Invocation) *tenantstatus.Inspector {
	return &tenantstatus.Inspector{
		JS: c.JS, Topology: c.Topology, Settings: c.Tenants, Health: c.Health, Ledger: c.Ledger,
		Salesforce: tenantstatus.SourceClients{Source: c.Salesforce},
		Now:        inv.Clock,
	}
}

// DLQ reads and settles dead letters.
func (c *Conn) DLQ() deadletter.DLQ { return deadletter.DLQ{JS: c.JS, Topology: c.Topology} }

// Publisher publishes with trace and dedup headers.
func (c *Conn) Publisher() natsx.Publisher { return natsx.Publisher{JS: c.JS, Topology: c.Topology} }

// Wrap turns an error from the shared packages into a cli error that says
// what to do.
func Wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	var ce *cli.Error
	if errors.As(err, &ce) {
		return err
	}
	return cli.Failf(err, "%s: %v", what, fmt.Sprint(err))
}

// UseEmailHashKey installs the install's email hash key from the same
// variables the services read (OPTOUT_EMAIL_HASH_KEY_FILE or
// OPTOUT_EMAIL_HASH_KEY), so an address typed by an operator hashes as the
// ledger's emailHash did. Without either, lookups by email are refused
// (proof.ParseQuery says so) rather than matching nothing.
func UseEmailHashKey(inv *cli.Invocation) error {
	l := config.FromMap(inv.Environ())
	key := logx.EmailHashKeyFromEnv(l)
	if err := l.Err(); err != nil {
		return cli.Usagef("%v", err)
	}
	if key != nil {
		logx.SetEmailHashKey(key)
	}
	return nil
}

// CompleteWithin bounds a completion's visit to NATS: the shell waits on it
// while the operator types.
var CompleteWithin = 5 * time.Second

// Complete answers a shell's completion from NATS: list runs on a
// connection opened with the command's variables and global flags, bounded
// by CompleteWithin. Nothing is printed: a shell shows no errors while
// completing, so a failure (NATS down, not provisioned) offers nothing.
func Complete(cmd *cobra.Command, inv *cli.Invocation, list func(context.Context, *Conn) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cmd.Context(), CompleteWithin)
	defer cancel()
	quiet := *inv
	quiet.Stdout, quiet.Stderr = io.Discard, io.Discard
	c, err := Open(ctx, &quiet)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	defer c.Close()
	out, err := list(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// CompleteTenant completes a command's first argument, the tenant, with the
// tenants that have settings in NATS (the tenant store), "sync on" or "sync
// off" beside each.
func CompleteTenant(inv *cli.Invocation) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return Complete(cmd, inv, func(ctx context.Context, c *Conn) ([]cobra.Completion, error) {
			all, err := c.Tenants.List(ctx)
			if err != nil {
				return nil, err
			}
			out := make([]cobra.Completion, 0, len(all))
			for _, s := range all {
				if !strings.HasPrefix(s.Tenant, prefix) {
					continue
				}
				sync := "sync off"
				if s.SyncEnabled {
					sync = "sync on"
				}
				out = append(out, cobra.CompletionWithDesc(s.Tenant, sync))
			}
			return out, nil
		})
	}
}
