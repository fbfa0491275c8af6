package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/internal/testsandbox"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Sizes of the run; OPTOUT_CLUSTER_EVENTS raises the burst.
const (
	personsPerTenant = 2000
	minEvents        = 20000
	pushers          = 2
)

// tenants: one syncs to the sales field (the latest wish), one to Email Opt
// Out (true once any opt-out is known, never cleared from here).
var tenants = []struct {
	name  string
	sales bool
}{{"acme", true}, {"globex", false}}

// cluster is the test's world: the NATS cluster, the sandbox, the pusher
// processes and what the burst sent.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	ps      *procs
	nats    *natsCluster
	nc      *nats.Conn
	js      jetstream.JetStream
	prov    *natsx.Provisioned
	topo    natsx.Topology
	lg      *ledger.Ledger
	sb      *sandbox.Sandbox
	env     map[string]string
	writes  *writeLog
	hostOrg map[string]string // sandbox origin host → org
	field   map[string]string // tenant → the Salesforce field it syncs
	persons []*person
	pushers []*proc
	// pusherBin is services/pusher built for the test.
	pusherBin string
	// began is when the burst began; progress lines say how long since.
	began time.Time
	// killedAt is when a pusher was killed; claimedAtKill the claims then.
	killedAt      time.Time
	claimedAtKill map[string]optout.Claim
	log           zerolog.Logger
}

func TestClusterBurstWithKilledLeadersAndPusher(t *testing.T) {
	if os.Getenv("OPTOUT_CLUSTER") != "1" {
		t.Skip("heavy: set OPTOUT_CLUSTER=1 (make test-cluster)")
	}
	began := time.Now()
	// Inside go test's own -timeout, so cleanup (killing every process)
	// always runs.
	ctx, cancel := context.WithTimeout(context.Background(), 13*time.Minute)
	defer cancel()
	cl := setUp(ctx, t)

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OPTOUT_CLUSTER_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	events := minEvents
	if s := os.Getenv("OPTOUT_CLUSTER_EVENTS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > events {
			events = n
		}
	}
	t.Logf("seed %d (OPTOUT_CLUSTER_SEED reproduces the histories)", seed)
	rng := rand.New(rand.NewPCG(seed, 12))
	b := plan(rng, cl.persons, events, time.Now())
	t.Logf("burst: %d events (%d opt-outs, %d resubscribes, %d ties, %d with only the Salesforce id, %d with only the Sales Connect id) for %d persons; %d messages with %d same-id and %d new-id duplicates",
		b.events, b.optOuts, b.res, b.ties, b.sfOnly, b.scOnly, len(cl.persons), len(b.pubs), b.sameID, b.newID)

	for i := range pushers {
		cl.pushers = append(cl.pushers, cl.startPusher(fmt.Sprintf("pusher-%d", i+1)))
	}

	burstStart := time.Now()
	cl.began = burstStart
	chaos := cl.burst(b)
	published := time.Since(burstStart)

	drainStart := time.Now()
	if !cl.waitDrained(4 * time.Minute) {
		// Compare anyway: what the model finds says what was lost.
		v := cl.verify()
		t.Fatalf("not drained; the model finds: %s\n%s", v, strings.Join(v.examples, "\n"))
	}
	drained := time.Since(burstStart)
	t.Logf("drained %s after the burst began (publishing took %s, draining after it %s)", drained.Round(time.Millisecond), published.Round(time.Millisecond), time.Since(drainStart).Round(time.Millisecond))

	// The surviving replica stops as Kubernetes stops it and must exit 0,
	// finishing what it has in flight; nothing may be left to do after.
	for _, p := range cl.pushers {
		if p.Running() {
			if err := p.Stop(40 * time.Second); err != nil {
				t.Errorf("pusher shutdown: %v", err)
			}
		}
	}
	if err := cl.drainedNow(); err != nil {
		t.Fatalf("work left after the pushers stopped: %v", err)
	}
	cl.waitAuditCaughtUp(time.Minute)

	v := cl.verify()
	t.Logf("after the burst: %s", v)
	v.require(t)
	failover := cl.failover(ctx)

	rec := cl.reconcileAcrossRedisRestart()
	v2 := cl.verify()
	t.Logf("after the reconcile: %s", v2)
	v2.require(t)
	if v2.writes != v.writes {
		t.Errorf("the reconcile wrote Salesforce %d times on a drained cluster; want 0", v2.writes-v.writes)
	}

	exits := make([]string, 0, len(cl.pushers))
	for _, p := range cl.pushers {
		exits = append(exits, fmt.Sprintf("%s %s", p.Name, p.ExitStatus()))
	}
	t.Logf("SUMMARY %d events (%d messages) for %d persons: lost %d, reverted %d, double effects %d (Salesforce %d, Email Opt Out clears %d, stray writes %d, audit records %d), audit records missing %d, ledger mismatches %d, DLQ %d",
		b.events, len(b.pubs), len(cl.persons), v2.lost, v2.reverted, v2.double(), v2.sfDouble, v2.clears, v2.stray, v2.auditDouble, v2.auditMissing, v2.ledgerMismatch, v2.dlq)
	t.Logf("SUMMARY Salesforce: %d record writes, %d of them changing nothing, at most %d on one record; pushers: %s",
		v2.writes, v2.redundant, v2.maxPerRecord, strings.Join(exits, ", "))
	for _, c := range chaos {
		t.Logf("SUMMARY chaos: %s", c)
	}
	t.Logf("SUMMARY failover: %s", failover)
	t.Logf("SUMMARY reconcile: %s", rec)
	t.Logf("SUMMARY time: published in %s, drained %s after the burst began, %s in all",
		published.Round(time.Millisecond), drained.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// setUp starts the cluster, provisions the production topology on it,
// serves the sandbox and seeds one record per person.
func setUp(ctx context.Context, t *testing.T) *cluster {
	t.Helper()
	root := repoRoot(t)
	cl := &cluster{t: t, ctx: ctx, dir: t.TempDir(), hostOrg: map[string]string{}, field: map[string]string{},
		log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	cl.ps = newProcs(t)
	natsBin := natsServerBin(t, root)
	pusherBin := build(t, root, cl.dir, "./services/pusher", "pusher")
	cl.nats = startCluster(t, cl.ps, natsBin, cl.dir)
	for _, n := range cl.nats.nodes {
		on, err := n.syncAlways(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !on {
			t.Fatalf("nats-server %s runs without sync_interval: always", n.name)
		}
	}
	nc, err := natsx.Connect(natsx.ConnConfig{URL: cl.nats.urls(), Name: "cluster-test"}, cl.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cl.nc = nc
	t.Logf("nats-server %s, cluster %q of %d", nc.ConnectedServerVersion(), nc.ConnectedClusterName(), len(cl.nats.nodes))

	// The production topology, as the services provision it: no namespace,
	// file storage, replicas left to Provision (3 on a cluster).
	cl.topo = natsx.DefaultTopology()
	var prov *natsx.Provisioned
	if err := poll(ctx, time.Minute, 500*time.Millisecond, func(ctx context.Context) error {
		var err error
		prov, err = natsx.Provision(ctx, nc, cl.topo)
		return err
	}); err != nil {
		t.Fatalf("provision on the cluster: %v", err)
	}
	if prov.Replicas != 3 {
		t.Fatalf("Provision chose %d replicas on a 3-node cluster; want 3", prov.Replicas)
	}
	cl.prov, cl.js = prov, prov.JS
	var names []string
	for _, s := range cl.topo.Streams(3) {
		names = append(names, s.Name)
	}
	for _, b := range cl.topo.Buckets(3) {
		names = append(names, "KV_"+b.Bucket)
	}
	for _, name := range names {
		if err := poll(ctx, time.Minute, 200*time.Millisecond, func(ctx context.Context) error {
			r, leader, current, err := replicaState(ctx, cl.js, name)
			switch {
			case err != nil:
				return err
			case r != 3:
				return fmt.Errorf("%s has %d replicas; want 3", name, r)
			case leader == "" || current != 2:
				return fmt.Errorf("%s: leader %q with %d current followers; want 2", name, leader, current)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if cl.lg, err = ledger.New(ctx, prov); err != nil {
		t.Fatal(err)
	}

	cl.writes = &writeLog{}
	var orgs []sandbox.OrgConfig
	for _, tn := range tenants {
		o := sandbox.OrgConfig{Name: tn.name, ClientID: tn.name + "-id", ClientSecret: tn.name + "-secret",
			APIVersions: []string{"62.0"}, DailyAPILimit: 10_000_000}
		if tn.sales {
			o.CustomField, o.CustomFieldInstalled, o.CustomFieldWritable = tenant.DefaultCustomField, true, true
		}
		orgs = append(orgs, o)
	}
	cl.sb, _, cl.env = testsandbox.ServeWith(t, orgs, cl.writes.wrap)
	settings := tenant.Store{KV: prov.Tenants}
	for _, tn := range tenants {
		u, err := url.Parse(cl.env["SF_"+strings.ToUpper(tn.name)+"_TOKEN_URL"])
		if err != nil || u.Host == "" {
			t.Fatalf("sandbox origin of %s: %q %v", tn.name, u, err)
		}
		cl.hostOrg[u.Host] = tn.name
		// Salesforce answers in tens of milliseconds, not microseconds, so
		// batches are in flight when processes die.
		cl.sb.Org(tn.name).SetLatency(20 * time.Millisecond)
		st := tenant.Default(tn.name)
		st.SyncEnabled = true
		if tn.sales {
			st.Field = tenant.SalesOptOut
		}
		if err := settings.Put(ctx, st); err != nil {
			t.Fatal(err)
		}
		cl.field[tn.name] = st.TargetField()
		org := cl.sb.Org(tn.name)
		for i := range personsPerTenant {
			typ := "Contact"
			if i%5 == 4 {
				typ = "Lead"
			}
			r := org.Put(sandbox.Record{Type: typ, Email: fmt.Sprintf("%s-p%d@example.com", tn.name, i)})
			cl.persons = append(cl.persons, &person{tenant: tn.name, sc: fmt.Sprintf("sc-%d", i), sfID: r.ID, objType: typ})
		}
	}
	cl.pusherBin = pusherBin
	return cl
}
