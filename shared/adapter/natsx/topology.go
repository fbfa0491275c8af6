package natsx

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// Subject roots. Control requests use subjects no stream captures, so a reply
// can never come from JetStream's publish acknowledgement.
// The roots are the event package's prefixes without the trailing dot
// (spelled out here so this layer needs no domain package;
// eventstream's TestSubjectRootsAreTheEventContracts keeps them equal).
const (
	EventsRoot  = "optout.v1.events"
	DLQRoot     = "optout.v1.dlq"
	AppliedRoot = "optout.v1.applied"
	AuditRoot   = "optout.v1.audit"
	ControlRoot = "optout.v1.control"
	// RunsRoot carries the reconciler's run reports, one per finished run.
	RunsRoot = "optout.v1.runs"
)

// Topology names and sizes every JetStream resource. Namespace, empty in
// production, prefixes every subject, stream and bucket so tests (and
// side-by-side environments) share one server without overlapping.
type Topology struct {
	Namespace string

	// Replicas is 0 for "auto": 3 when connected to a cluster, else 1.
	Replicas int
	Storage  jetstream.StorageType

	EventsMaxAge    time.Duration
	DLQMaxAge       time.Duration
	AppliedMaxAge   time.Duration
	AuditMaxAge     time.Duration
	RunsMaxAge      time.Duration
	DuplicateWindow time.Duration
	MaxMsgSize      int32

	// PusherAckWait and PusherMaxAckPending shape the pusher's durable
	// consumer of the events stream, one for every tenant: MaxAckPending
	// caps the events delivered and not yet settled across every replica
	// (folded, and held while their push is made: at most a few seconds).
	// AckWait is how long a crashed replica's events wait to be delivered
	// again: a live replica settles an event within seconds (folded in
	// milliseconds, held at most 2 s for its push before a dirty marker
	// takes over), so 15 s costs nothing but a redelivery, which the fold
	// recognises, when a replica stalls longer (a leader election).
	PusherAckWait       time.Duration
	PusherMaxAckPending int
}

// DefaultTopology fits both a 1-node dev server and a 3-node cluster.
func DefaultTopology() Topology {
	return Topology{
		Storage:             jetstream.FileStorage,
		EventsMaxAge:        14 * 24 * time.Hour,
		DLQMaxAge:           90 * 24 * time.Hour,
		AppliedMaxAge:       14 * 24 * time.Hour,
		AuditMaxAge:         7 * 365 * 24 * time.Hour,
		RunsMaxAge:          90 * 24 * time.Hour,
		DuplicateWindow:     10 * time.Minute,
		MaxMsgSize:          1 << 20,
		PusherAckWait:       15 * time.Second,
		PusherMaxAckPending: DefaultPusherMaxAckPending,
	}
}

// TopologyFromEnv reads the OPTOUT_NATS_* variables over the defaults.
func TopologyFromEnv(l *config.Loader) Topology {
	t := DefaultTopology()
	t.Namespace = l.String("OPTOUT_NAMESPACE", "", "prefix of every subject (x.) and stream or bucket (X_), empty in production; tests share one server this way")
	t.Replicas = l.Int("OPTOUT_NATS_REPLICAS", 0, 0, 5, "stream and bucket replicas; 0 = 3 in a cluster, 1 on a single server")
	if l.String("OPTOUT_NATS_STORAGE", "file", "JetStream storage", "file", "memory") == "memory" {
		t.Storage = jetstream.MemoryStorage
	}
	day := 24 * time.Hour
	t.EventsMaxAge = l.Duration("OPTOUT_EVENTS_MAX_AGE", t.EventsMaxAge, time.Hour, 365*day, "how long events are kept for replay")
	t.DLQMaxAge = l.Duration("OPTOUT_DLQ_MAX_AGE", t.DLQMaxAge, time.Hour, 10*365*day, "how long dead letters are kept")
	t.AuditMaxAge = l.Duration("OPTOUT_AUDIT_MAX_AGE", t.AuditMaxAge, day, 100*365*day, "how long the audit trail is kept (7 years)")
	t.RunsMaxAge = l.Duration("OPTOUT_RUNS_MAX_AGE", t.RunsMaxAge, time.Hour, 10*365*day, "how long reconciler run-report events are kept")
	t.DuplicateWindow = l.Duration("OPTOUT_DUPLICATE_WINDOW", t.DuplicateWindow, time.Second, 7*day, "window in which a repeated Nats-Msg-Id is dropped")
	t.PusherMaxAckPending = l.Int("OPTOUT_MAX_ACK_PENDING", t.PusherMaxAckPending, 1, 100000, "events delivered to the pusher replicas and not yet settled, all tenants together (the shared consumer's MaxAckPending): a replica holds at most 1,000 for milliseconds before their fold and, per tenant, a quarter of this awaiting their push (2s at most), so this leaves room for several replicas and a crashed replica's events until their AckWait (15s) ends")
	return t
}

func (t Topology) subject(root string) string {
	if t.Namespace == "" {
		return root
	}
	return t.Namespace + "." + root
}

func (t Topology) name(base string) string {
	if t.Namespace == "" {
		return base
	}
	return strings.ToUpper(t.Namespace) + "_" + base
}

// EventsSubject is where upstream publishers send a tenant's events.
func (t Topology) EventsSubject(tenant string) string { return t.subject(EventsRoot) + "." + tenant }

// DLQSubject is where a tenant's dead letters go.
func (t Topology) DLQSubject(tenant string) string { return t.subject(DLQRoot) + "." + tenant }

// AppliedSubject carries Salesforce-side opt-outs back to Sales Connect.
func (t Topology) AppliedSubject(tenant string) string { return t.subject(AppliedRoot) + "." + tenant }

// RunsSubject carries a tenant's reconciler run reports.
func (t Topology) RunsSubject(tenant string) string { return t.subject(RunsRoot) + "." + tenant }

// ControlSubject is a request/reply subject, e.g. ControlSubject("reconcile", "acme").
func (t Topology) ControlSubject(verb, tenant string) string {
	return t.subject(ControlRoot) + "." + verb + "." + tenant
}

// TenantFromEventsSubject returns the tenant token of an events subject.
func (t Topology) TenantFromEventsSubject(subject string) (string, bool) {
	tenant, ok := strings.CutPrefix(subject, t.subject(EventsRoot)+".")
	if !ok || tenant == "" || strings.Contains(tenant, ".") {
		return "", false
	}
	return tenant, true
}

// Stream and bucket names.
func (t Topology) EventsStream() string  { return t.name("OPTOUT_EVENTS") }
func (t Topology) DLQStream() string     { return t.name("OPTOUT_DLQ") }
func (t Topology) AppliedStream() string { return t.name("OPTOUT_APPLIED") }
func (t Topology) AuditStream() string   { return t.name("OPTOUT_AUDIT") }
func (t Topology) RunsStream() string    { return t.name("OPTOUT_RUNS") }
func (t Topology) LedgerBucket() string  { return t.name("optout_ledger") }
func (t Topology) TenantsBucket() string { return t.name("optout_tenants") }
func (t Topology) RunsBucket() string    { return t.name("optout_runs") }
func (t Topology) HealthBucket() string  { return t.name("optout_health") }
func (t Topology) DirtyBucket() string   { return t.name("optout_dirty") }
func (t Topology) AliasBucket() string   { return t.name("optout_aliases") }

// Streams returns the configuration of every stream.
func (t Topology) Streams(replicas int) []jetstream.StreamConfig {
	mk := func(name, root, desc string, maxAge time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			// One token after the root: a subject with more tokens is refused
			// at publish time instead of being stored where no consumer looks.
			Subjects: []string{t.subject(root) + ".*"},
			// Limits retention keeps events after their ack: the reconciler and
			// the audit trail replay them, and a termed message stays readable.
			Retention:  jetstream.LimitsPolicy,
			MaxAge:     maxAge,
			Storage:    t.Storage,
			Replicas:   replicas,
			Duplicates: t.DuplicateWindow,
			MaxMsgSize: t.MaxMsgSize,
			Discard:    jetstream.DiscardOld,
		}
	}
	events := mk(t.EventsStream(), EventsRoot, "opt-out events from upstream publishers", t.EventsMaxAge)
	events.MaxConsumers = EventsMaxConsumers
	return []jetstream.StreamConfig{
		events,
		mk(t.DLQStream(), DLQRoot, "events that can never be applied, with the reason in headers", t.DLQMaxAge),
		mk(t.AppliedStream(), AppliedRoot, "Salesforce-side opt-outs for Sales Connect to apply", t.AppliedMaxAge),
		t.auditStream(replicas),
		mk(t.RunsStream(), RunsRoot, "reconciler run reports, one per finished run", t.RunsMaxAge),
	}
}

// auditStream sources every write of the ledger bucket's stream, so the
// trail is written by the server with the change itself: a change cannot be
// stored without its record, and nothing a service does (or fails to do)
// can make the two diverge. Its subjects are the ledger's own,
// "$KV.<bucket>.<tenant>.<person>".
func (t Topology) auditStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.AuditStream(),
		Description: "every ledger change per person: the audit trail (sourced from the ledger bucket)",
		Sources: []*jetstream.StreamSource{{
			Name:          "KV_" + t.LedgerBucket(),
			FilterSubject: "$KV." + t.LedgerBucket() + ".>",
		}},
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     t.AuditMaxAge,
		Storage:    t.Storage,
		Replicas:   replicas,
		MaxMsgSize: t.MaxMsgSize,
		Discard:    jetstream.DiscardOld,
	}
}

// Buckets returns the configuration of every KV bucket.
func (t Topology) Buckets(replicas int) []jetstream.KeyValueConfig {
	mk := func(name, desc string, history uint8) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: name, Description: desc, History: history, Storage: t.Storage, Replicas: replicas}
	}
	return []jetstream.KeyValueConfig{
		// History outlasts the audit stream's sourcing lag: a revision
		// replaced before the source copied it would be missing from the
		// trail.
		mk(t.LedgerBucket(), "one entry per person per tenant", ledgerHistory),
		mk(t.TenantsBucket(), "tenant settings", 5),
		mk(t.RunsBucket(), "reconciler run reports and checkpoints", 10),
		mk(t.HealthBucket(), "each tenant's sync health as the pusher last saw it", 1),
		mk(t.DirtyBucket(), "persons whose Salesforce value is not yet what they want: the push's work list", 1),
		mk(t.AliasBucket(), "Salesforce ids (and converted Leads) to their person's ledger key", 1),
	}
}

// EventsMaxConsumers is the events stream's consumer limit. The stream
// needs a handful: the pusher's one durable consumer, and short-lived
// in-memory ones that read a tenant's events (the reconciler's drain, the
// backlog counts of optoutctl and the admin page), one at a time per
// request. 1,000 leaves operators' tools ample room and still caps a leak;
// it is set on the stream because -1 means the server's default, which a
// server's configuration may set lower. Provision never lowers it below
// the consumers a stream still has (see eventsMaxConsumers): deployments
// from before the shared consumer have one per tenant until the pusher
// has deleted them.
const EventsMaxConsumers = 1_000

// DefaultPusherMaxAckPending is OPTOUT_MAX_ACK_PENDING's default. A pusher
// replica holds at most pusherPullBuffer (1,000) events it has been
// delivered and not folded; folding takes milliseconds, whatever
// Salesforce does; and at most a quarter of MaxAckPending a tenant folded
// and held for their push, for 2 s at most before a dirty marker takes
// over. 10,000 covers several replicas at full speed, plus the events a
// crashed replica held (redelivered only after AckWait) and events
// waiting for a retry of their fold, without stalling the replicas still
// running; and it bounds what a fleet that dies at once leaves to be
// redelivered.
const DefaultPusherMaxAckPending = 10_000

// PusherConsumer names the pusher's durable consumer of the events stream.
// Every tenant's events go through it: folding an event into the ledger
// takes milliseconds and never waits for Salesforce (the push is driven by
// per-tenant work queues), so one consumer isolates tenants as well as one
// per tenant did, without a consumer state file per tenant for the server
// to keep writing.
func (t Topology) PusherConsumer() string { return t.name("pusher") }

// PusherConsumerConfig is the pusher's consumer as it is made on a stream
// no pusher has read yet.
func (t Topology) PusherConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     t.PusherConsumer(),
		Description: "folds every tenant's opt-out events into the ledger (optout-sync pusher)",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     t.PusherAckWait,
		// Unlimited deliveries: the pusher decides when an event is dead,
		// never the broker.
		MaxDeliver:    -1,
		MaxAckPending: t.PusherMaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// ledgerHistory is the revisions the ledger bucket keeps per person.
const ledgerHistory = 16

// EventTenants lists the tenant tokens that have events stored, so the pusher
// finds tenants nobody configured yet (their events must not be ignored).
func EventTenants(ctx context.Context, js jetstream.JetStream, t Topology) ([]string, error) {
	s, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(t.subject(EventsRoot)+".*"))
	if err != nil {
		return nil, fmt.Errorf("events stream subjects: %w", err)
	}
	prefix := t.subject(EventsRoot) + "."
	out := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		out = append(out, strings.TrimPrefix(subj, prefix))
	}
	sort.Strings(out)
	return out, nil
}

// Provisioned holds handles to everything Provision made sure exists.
type Provisioned struct {
	Topology Topology
	JS       jetstream.JetStream
	Replicas int
	Ledger   jetstream.KeyValue
	Tenants  jetstream.KeyValue
	Runs     jetstream.KeyValue
	Health   jetstream.KeyValue
	Dirty    jetstream.KeyValue
	Aliases  jetstream.KeyValue
}

// Provision creates or updates every stream and bucket (the pusher's
// consumer is made by EnsurePusherConsumer). Running it twice changes
// nothing; a changed setting is updated in place, never duplicated.
func Provision(ctx context.Context, nc *nats.Conn, t Topology) (*Provisioned, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	replicas := t.Replicas
	if replicas == 0 {
		replicas = 1
		if nc.ConnectedClusterName() != "" {
			replicas = 3
		}
	}
	// Buckets first: the audit stream sources the ledger bucket's stream.
	p := &Provisioned{Topology: t, JS: js, Replicas: replicas}
	kvs := []*jetstream.KeyValue{&p.Ledger, &p.Tenants, &p.Runs, &p.Health, &p.Dirty, &p.Aliases}
	for i, kc := range t.Buckets(replicas) {
		var kv jetstream.KeyValue
		var err error
		if t.leaderReads(kc.Bucket) {
			kv, err = leaderReadBucket(ctx, js, kc)
		} else {
			kv, err = js.CreateOrUpdateKeyValue(ctx, kc)
		}
		if err != nil {
			return nil, fmt.Errorf("provision bucket %s: %w", kc.Bucket, err)
		}
		*kvs[i] = kv
	}
	for _, sc := range t.Streams(replicas) {
		if sc.Name == t.EventsStream() {
			if sc.MaxConsumers, err = eventsMaxConsumers(ctx, js, sc); err != nil {
				return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	return p, nil
}

// eventsMaxConsumers is the consumer limit to set on the events stream:
// EventsMaxConsumers, unless the stream has a higher limit and too many
// consumers for it (per-tenant consumers of an earlier version, which the
// pusher deletes once it has replaced them): lowering it then would
// refuse the pusher's new consumer. The next start after they are gone
// lowers it.
func eventsMaxConsumers(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (int, error) {
	s, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return sc.MaxConsumers, nil
	}
	if err != nil {
		return 0, err
	}
	info := s.CachedInfo()
	if cur := info.Config.MaxConsumers; cur > sc.MaxConsumers && info.State.Consumers+consumerHeadroom > sc.MaxConsumers {
		return cur, nil
	}
	return sc.MaxConsumers, nil
}

// consumerHeadroom is the room eventsMaxConsumers keeps above the
// consumers a stream has: the pusher's and a few short-lived ones.
const consumerHeadroom = 100

// leaderReads reports whether a bucket's readers decide on what they read,
// so a read must see every write acknowledged before it: the ledger (whose
// read-then-decide steps, such as dropping a dirty marker after finding the
// person clean, are not all guarded by compare-and-set), its dirty set, its
// aliases, and the run reports with the reconcilers' fences (a fence read
// from a follower behind the holder's own raise refused the holder's writes
// in the cluster test, and could let a stale holder pass).
func (t Topology) leaderReads(bucket string) bool {
	return bucket == t.LedgerBucket() || bucket == t.DirtyBucket() || bucket == t.AliasBucket() || bucket == t.RunsBucket()
}

// leaderReadBucket creates or updates a bucket whose reads go to its
// stream's leader. nats.go makes every bucket with AllowDirect, which lets
// any replica answer a Get: on a cluster a follower that has not yet
// applied a write answers with the value before it (a Get right after a
// Create finds nothing), which lost dirty markers and so opt-outs in the
// cluster test (deploy/clustertest). The stream is therefore updated in
// place from its current configuration, never through
// CreateOrUpdateKeyValue, which would switch direct reads back on for as
// long as the update takes.
func leaderReadBucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	name := "KV_" + kc.Bucket
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateKeyValue(ctx, kc); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, err
		}
		s, err = js.Stream(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	cur := s.CachedInfo().Config
	want := cur
	want.Description, want.MaxMsgsPerSubject, want.Storage, want.Replicas = kc.Description, int64(kc.History), kc.Storage, kc.Replicas
	want.AllowDirect = false
	if !reflect.DeepEqual(cur, want) {
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("leader reads: %w", err)
		}
	}
	// Bound after the update: a handle takes its read path from the
	// stream's configuration when it is bound.
	return js.KeyValue(ctx, kc.Bucket)
}

// Teardown deletes every resource of a topology; tests use it to leave
// nothing behind.
func Teardown(ctx context.Context, nc *nats.Conn, t Topology) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var errs []error
	for _, sc := range t.Streams(1) {
		if err := js.DeleteStream(ctx, sc.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	for _, kc := range t.Buckets(1) {
		if err := js.DeleteKeyValue(ctx, kc.Bucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
