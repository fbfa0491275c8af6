package push_test

// The model-based randomized end-to-end test of issue 10: random histories
// of opt-outs and resubscribes, published shuffled and partly duplicated,
// through two pusher replicas (one killed mid-batch) against a sandbox that
// fails transiently, compared person by person with a reference model.
//
// `make test` runs it with 1,000 persons; `make chaos` with 100,000 and
// writes bench/chaos.md (OPTOUT_MODEL_PERSONS, OPTOUT_MODEL_REPORT,
// OPTOUT_MODEL_SEED).

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/refmodel"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// modelEvent is one event of a person's random history.
type modelEvent struct {
	id     string
	optOut bool
	at     time.Time
	scID   bool // carries the Sales Connect id (else only the Salesforce id)
}

// modelPerson is one person: a record in one org and its history.
type modelPerson struct {
	tenant string
	sc     string
	sfID   string
	events []modelEvent
}

// wish is the shared reference model's (internal/refmodel) verdict on the
// person's history.
func (p modelPerson) wish() refmodel.Wish {
	hist := make([]refmodel.Event, len(p.events))
	for i, e := range p.events {
		hist[i] = refmodel.Event{At: e.at, OptOut: e.optOut}
	}
	return refmodel.Of(hist)
}

// field is the Salesforce field the person's tenant syncs (acme: the sales
// field; globex: Email Opt Out).
func modelField(tenantID string) string {
	if tenantID == "acme" {
		return sales
	}
	return std
}

// modelReport counts what the comparison found; every count but the sizes
// must be zero.
type modelReport struct {
	Persons    int
	Events     int
	Published  int
	Duplicates int
	Replays    int

	Lost           int // the model wants the opt-out, Salesforce lacks it
	Reverted       int // the ledger's wish is not the newest wish (an older event won)
	IgnoredResub   int // the sales field is true where the newest wish is a resubscribe
	OtherField     int // a field the tenant did not choose was written
	Unsettled      int // the ledger does not say synced on the model's value
	UnfoldedEvents int // an event id missing from the person's entry
	DoubleEffects  int // an event applied twice, an audit record twice or missing, a person split

	CollectionCalls   int
	collectionRecords int
	Faulted           int // calls answered by an injected fault
	KilledAfterCalls  int
	Elapsed           time.Duration
	examples          []string
	seed              uint64
}

func (r *modelReport) fail(kind *int, format string, args ...any) {
	*kind++
	if len(r.examples) < 20 {
		r.examples = append(r.examples, fmt.Sprintf(format, args...))
	}
}

func (r *modelReport) problems() int {
	return r.Lost + r.Reverted + r.IgnoredResub + r.OtherField + r.Unsettled + r.UnfoldedEvents + r.DoubleEffects
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestModelRandomHistoriesThroughTwoReplicas(t *testing.T) {
	t.Parallel()
	persons := envInt("OPTOUT_MODEL_PERSONS", 1000)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("OPTOUT_MODEL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (OPTOUT_MODEL_SEED=%d reproduces the histories), %d persons", seed, seed, persons)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	within := 3*time.Minute + time.Duration(persons)*10*time.Millisecond
	s := newStackWithin(t, within)
	s.salesField()
	run := s.topo.Namespace

	// Histories: 1–4 events a person, in the past, some sharing a stamp (a
	// tie, which the opt-out wins), some carrying only the Salesforce id.
	now := time.Now()
	people := make([]modelPerson, persons)
	rep := &modelReport{Persons: persons, seed: seed}
	for i := range people {
		p := &people[i]
		p.tenant = []string{"acme", "globex"}[i%2]
		p.sc = fmt.Sprintf("sc-%d", i)
		p.sfID = s.org(p.tenant).Put(sandbox.Record{Type: "Contact", Email: fmt.Sprintf("m%d@example.com", i)}).ID
		n := 1 + rng.IntN(4)
		for j := range n {
			at := now.Add(-time.Minute - time.Duration(rng.Int64N(int64(10*24*time.Hour))))
			if j > 0 && rng.IntN(6) == 0 {
				at = p.events[rng.IntN(j)].at
			}
			p.events = append(p.events, modelEvent{
				id: fmt.Sprintf("%s-%d-%d", run, i, j), optOut: rng.IntN(5) < 3, at: at,
				scID: rng.IntN(10) != 0,
			})
		}
		rep.Events += n
	}

	// Published shuffled; some twice under the same Nats-Msg-Id (the
	// stream's duplicate window drops them), some again under another one
	// (a replay beyond the window: the ledger must recognise it).
	type pub struct {
		p     *modelPerson
		e     modelEvent
		msgID string
	}
	var pubs []pub
	for i := range people {
		for _, e := range people[i].events {
			pubs = append(pubs, pub{&people[i], e, e.id})
			switch rng.IntN(10) {
			case 0:
				pubs = append(pubs, pub{&people[i], e, e.id})
				rep.Duplicates++
			case 1:
				pubs = append(pubs, pub{&people[i], e, e.id + "-replayed"})
				rep.Replays++
			}
		}
	}
	rng.Shuffle(len(pubs), func(i, j int) { pubs[i], pubs[j] = pubs[j], pubs[i] })
	rep.Published = len(pubs)

	// Transient faults on both orgs: a share of 503s, row locks on some
	// records, connections dropped after the write.
	for _, org := range []string{"acme", "globex"} {
		o := s.org(org)
		o.InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy", Share: 0.15, Times: 5 + persons/400})
		o.InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, DropAfterWrite: true, Share: 0.05, Times: 2 + persons/2000})
		for k := 0; k < min(100, persons/40); k++ {
			p := people[rng.IntN(persons)]
			if p.tenant == org {
				o.InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, RecordID: p.sfID, ErrorCode: "UNABLE_TO_LOCK_ROW", Times: 2})
			}
		}
	}

	// Replica A dies in the middle of a batch: its Kth write reaches
	// Salesforce, then it never answers and the replica stops pulling, as a
	// killed process would. Replica B carries on.
	cfg := fastConfig()
	killAt := 2 + rng.IntN(4)
	died := make(chan struct{})
	hung := make(chan struct{})
	ctxA, killA := context.WithCancel(s.ctx)
	s.startIn(ctxA, cfg, &dyingClients{inner: s.clients, after: int64(killAt), died: died, hang: hung})
	t.Cleanup(func() { close(hung) }) // runs before the replicas' own cleanups
	s.start(cfg)

	// Published asynchronously (a bounded window of acks outstanding),
	// while both replicas ingest and push.
	start := time.Now()
	acks := make([]jetstream.PubAckFuture, 0, len(pubs))
	for i, pb := range pubs {
		if i == len(pubs)/2 {
			// 401 mid-run: every issued token expires.
			s.org("acme").ExpireTokens()
			s.org("globex").ExpireTokens()
		}
		ack, err := s.publishModelEvent(pb.p, pb.e, pb.msgID)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	select {
	case <-s.prov.JS.PublishAsyncComplete():
	case <-s.ctx.Done():
		t.Fatal("publish acks did not all arrive")
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			t.Fatalf("publish %s: %v", ack.Msg().Header.Get(jetstream.MsgIDHeader), err)
		}
	}
	select {
	case <-died:
	case <-time.After(10 * time.Second):
		t.Log("replica A had not reached its fatal call; killed now")
	}
	killA()
	rep.KilledAfterCalls = killAt

	s.settleOrReport(within - time.Since(start) - 30*time.Second)
	rep.Elapsed = time.Since(start)
	for _, org := range []string{"acme", "globex"} {
		for _, c := range s.org(org).Calls() {
			if c.Route == sandbox.RouteCollectionsUpdate || c.Route == sandbox.RouteComposite {
				rep.CollectionCalls++
				rep.collectionRecords += c.Records
			}
			if c.FaultID != "" {
				rep.Faulted++
			}
		}
	}

	s.compareWithModel(people, rep)
	s.writeModelReport(rep)
	if rep.problems() != 0 {
		t.Fatalf("the end state differs from the reference model (seed %d): lost %d, reverted %d, ignored resubscribes %d, other field written %d, unsettled %d, unfolded events %d, double effects %d; first differences:\n%s",
			seed, rep.Lost, rep.Reverted, rep.IgnoredResub, rep.OtherField, rep.Unsettled, rep.UnfoldedEvents, rep.DoubleEffects, strings.Join(rep.examples, "\n"))
	}
	if rep.Faulted == 0 {
		t.Fatal("no injected fault fired: the test did not exercise retries")
	}
	t.Logf("%d persons, %d events (%d published) settled in %s with %d collections calls (%d faulted); 0 lost, 0 reverted, 0 double effects",
		persons, rep.Events, rep.Published, rep.Elapsed.Round(time.Millisecond), rep.CollectionCalls, rep.Faulted)
}

// settleOrReport waits until both tenants settle, logging progress every
// 30 s; past the deadline it fails with what is still unsettled.
func (s *stack) settleOrReport(within time.Duration) {
	s.t.Helper()
	deadline, report := time.Now().Add(within), time.Now().Add(30*time.Second)
	for !(s.settled("acme") && s.settled("globex")) {
		if now := time.Now(); now.After(report) || now.After(deadline) {
			var state []string
			for _, tn := range []string{"acme", "globex"} {
				ack, undelivered := s.pendingAcks(tn)
				dirty := 0
				if err := s.ledger.Dirty(s.ctx, tn, func(ledger.DirtyItem) { dirty++ }); err != nil {
					s.t.Fatal(err)
				}
				state = append(state, fmt.Sprintf("%s: %d undelivered, %d unacked, %d dirty", tn, undelivered, ack, dirty))
			}
			if now.After(deadline) {
				// What holds each dirty person, for the failure's reader.
				for _, tn := range []string{"acme", "globex"} {
					_ = s.ledger.Dirty(s.ctx, tn, func(d ledger.DirtyItem) {
						it, err := s.ledger.Get(s.ctx, d.Key)
						e, rev := it.Entry, it.Rev
						s.t.Logf("dirty %s (next attempt %s): rev %d, %v: wants %v, state %s (%s), field %s confirmed %v set by us %v, writing %+v, retry %+v",
							d.Key, d.NextAttempt, rev, err, e.OptedOut, e.State, e.Reason, e.Field, e.Confirmed != nil && *e.Confirmed, e.SetByUs, e.Writing, e.Retry)
					})
				}
				s.t.Fatalf("not settled after %s: %s", within, strings.Join(state, "; "))
			}
			s.t.Logf("settling: %s", strings.Join(state, "; "))
			report = now.Add(30 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishModelEvent publishes one event of a person under msgID.
func (s *stack) publishModelEvent(p *modelPerson, e modelEvent, msgID string) (jetstream.PubAckFuture, error) {
	ev := &optoutv1.OptOutEvent{
		EventId: e.id, TenantId: p.tenant,
		Person:     &optoutv1.Person{SalesforceId: p.sfID, ObjectType: optoutv1.ObjectType_CONTACT},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(e.at),
		Source:     optoutv1.Source_EMAIL_LINK,
	}
	if e.scID {
		ev.Person.SalesConnectId, ev.Person.Email = p.sc, p.sc+"@example.com"
	}
	if !e.optOut {
		ev.Action = optoutv1.Action_RESUBSCRIBE
	}
	data, ctype, err := event.Encode(ev, false)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", e.id, err)
	}
	m := nats.NewMsg(s.topo.EventsSubject(p.tenant))
	m.Data = data
	m.Header.Set(event.HeaderContentType, ctype)
	ack, err := s.prov.JS.PublishMsgAsync(m, jetstream.WithMsgID(msgID))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", e.id, err)
	}
	return ack, nil
}

// compareWithModel compares Salesforce, the ledger and the audit trail
// with the reference model, person by person.
func (s *stack) compareWithModel(people []modelPerson, rep *modelReport) {
	s.t.Helper()
	type live struct {
		key   string
		entry optout.Entry
	}
	bySF := map[string][]live{}
	audit := map[string][]ledger.AuditRecord{}
	for _, tn := range []string{"acme", "globex"} {
		if err := s.ledger.Scan(s.ctx, tn, func(it ledger.ScanItem) error {
			if it.Entry.SalesforceID != "" {
				k := tn + "/" + it.Entry.SalesforceID // ids repeat across orgs
				bySF[k] = append(bySF[k], live{it.Key, it.Entry})
			}
			return nil
		}, func(key string, err error) { s.t.Errorf("ledger %s: %v", key, err) }); err != nil {
			s.t.Fatal(err)
		}
		if err := ledger.ReadAudit(s.ctx, s.prov.JS, s.topo, tn, func(r ledger.AuditRecord) error {
			audit[r.Key] = append(audit[r.Key], r)
			return nil
		}); err != nil {
			s.t.Fatal(err)
		}
	}

	for _, p := range people {
		field := modelField(p.tenant)
		latest := p.wish()
		want := latest.Salesforce(field == std)
		rec, ok := s.org(p.tenant).Get(p.sfID)
		if !ok {
			s.t.Fatalf("record %s vanished from %s", p.sfID, p.tenant)
		}
		got, other := rec.CustomOptOut, rec.HasOptedOutOfEmail
		if field == std {
			got, other = rec.HasOptedOutOfEmail, rec.CustomOptOut
		}
		switch {
		case want && !got:
			rep.fail(&rep.Lost, "%s %s: opt-out lost: Salesforce %s=false, model wants true", p.tenant, p.sc, field)
		case !want && got:
			rep.fail(&rep.IgnoredResub, "%s %s (%s): resubscribe of %s not honoured: %s=true", p.tenant, p.sc, p.sfID, latest.DecidedAt.Format(time.RFC3339Nano), field)
		}
		if other {
			rep.fail(&rep.OtherField, "%s %s: the field the tenant did not choose was set", p.tenant, p.sc)
		}

		entries := bySF[p.tenant+"/"+p.sfID]
		if len(entries) != 1 {
			rep.fail(&rep.DoubleEffects, "%s %s: %d live ledger entries for %s; want one", p.tenant, p.sc, len(entries), p.sfID)
			continue
		}
		e := entries[0].entry
		if e.OptedOut != latest.OptOut || !e.DecidedAt.Equal(latest.DecidedAt.UTC()) {
			rep.fail(&rep.Reverted, "%s %s: ledger wish optedOut=%t at %s; the newest is optedOut=%t at %s",
				p.tenant, p.sc, e.OptedOut, e.DecidedAt.Format(time.RFC3339Nano), latest.OptOut, latest.DecidedAt.UTC().Format(time.RFC3339Nano))
		}
		if e.State != optout.StateSynced || e.Dirty(field) || (want && (e.Confirmed == nil || !*e.Confirmed)) {
			rep.fail(&rep.Unsettled, "%s %s: ledger state %s (confirmed %v, reason %q)", p.tenant, p.sc, e.State, e.Confirmed, e.Reason)
		}
		seen := map[string]bool{}
		for _, id := range e.RecentEvents {
			if seen[id] {
				rep.fail(&rep.DoubleEffects, "%s %s: event %s applied twice", p.tenant, p.sc, id)
			}
			seen[id] = true
		}
		for _, ev := range p.events {
			if !seen[ev.id] {
				rep.fail(&rep.UnfoldedEvents, "%s %s: event %s not in the ledger", p.tenant, p.sc, ev.id)
			}
		}
		if want != got && len(rep.examples) < 20 {
			// The person's audit trail says how it came to differ.
			for _, r := range audit[entries[0].key] {
				rep.examples = append(rep.examples, fmt.Sprintf("    v%d optedOut=%t field=%q confirmed=%v setByUs=%t %s: %s",
					r.Entry.Version, r.Entry.OptedOut, r.Entry.Field, r.Entry.Confirmed != nil && *r.Entry.Confirmed, r.Entry.SetByUs, r.Entry.State, r.Entry.Reason))
			}
		}
		s.checkAudit(entries[0].key, e, audit[entries[0].key], p, rep)
	}
}

// checkAudit: one audit record per change of the entry, each a real
// change, none twice.
func (s *stack) checkAudit(key string, e optout.Entry, recs []ledger.AuditRecord, p modelPerson, rep *modelReport) {
	if uint64(len(recs)) != e.Version {
		rep.fail(&rep.DoubleEffects, "%s %s: %d audit records for %d changes", p.tenant, p.sc, len(recs), e.Version)
		return
	}
	var prev []byte
	for i, r := range recs {
		if r.Entry.Version != uint64(i+1) {
			rep.fail(&rep.DoubleEffects, "%s %s: audit record %d has version %d", p.tenant, p.sc, i+1, r.Entry.Version)
			return
		}
		cur := r.Entry
		cur.Version, cur.ChangedAt = 0, time.Time{}
		b, err := json.Marshal(cur)
		if err != nil {
			s.t.Fatal(err)
		}
		if prev != nil && string(b) == string(prev) {
			rep.fail(&rep.DoubleEffects, "%s %s: audit record %d of %s changes nothing: %s", p.tenant, p.sc, i+1, key, b)
		}
		prev = b
	}
}

// writeModelReport writes the report where OPTOUT_MODEL_REPORT says.
func (s *stack) writeModelReport(rep *modelReport) {
	path := os.Getenv("OPTOUT_MODEL_REPORT")
	if path == "" {
		return
	}
	verdict := "PASS"
	if rep.problems() != 0 {
		verdict = "FAIL"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Chaos run: random histories through two pusher replicas\n\n")
	fmt.Fprintf(&b, "`make chaos` (services/pusher/push TestModelRandomHistoriesThroughTwoReplicas, seed %d). ", rep.seed)
	fmt.Fprintf(&b, "Random histories of 1–4 opt-outs and resubscribes per person with past timestamps (one in six reusing an earlier stamp of the person: a tie), one in ten carrying only the Salesforce id; ")
	fmt.Fprintf(&b, "published shuffled, one in ten again under the same Nats-Msg-Id and one in ten again under another; two pusher replicas, one killed after its %dth write reached Salesforce; ", rep.KilledAfterCalls)
	fmt.Fprintf(&b, "sandbox faults: 15%% of collections calls answer 503 (bounded), 5%% drop the connection after the write, `UNABLE_TO_LOCK_ROW` twice on some records, every token expired (401) half-way. ")
	fmt.Fprintf(&b, "Half the persons are in a tenant on the sales opt-out field, half on Email Opt Out. Reference model: the sales field ends at the newest wish (on a tie the opt-out wins); Email Opt Out ends true once any opt-out exists and is never cleared from here.\n\n")
	fmt.Fprintf(&b, "| what | count |\n|---|---|\n")
	for _, row := range []struct {
		k string
		v any
	}{
		{"persons", rep.Persons}, {"events", rep.Events}, {"messages published", rep.Published},
		{"… of which same-id duplicates", rep.Duplicates}, {"… of which replays under another id", rep.Replays},
		{"collections calls", rep.CollectionCalls}, {"records written", rep.collectionRecords}, {"calls answered by an injected fault", rep.Faulted},
		{"time to settle", rep.Elapsed.Round(time.Millisecond)},
		{"**lost** opt-outs (model wants true, Salesforce false)", rep.Lost},
		{"**reverted** (the ledger's wish is not the newest)", rep.Reverted},
		{"resubscribes not honoured", rep.IgnoredResub},
		{"**double effects** (an event or audit record twice, a change without a record, a person split)", rep.DoubleEffects},
		{"field the tenant did not choose written", rep.OtherField},
		{"persons not settled on the model's value", rep.Unsettled},
		{"events missing from the ledger", rep.UnfoldedEvents},
	} {
		fmt.Fprintf(&b, "| %s | %v |\n", row.k, row.v)
	}
	fmt.Fprintf(&b, "\nVerdict: **%s**\n", verdict)
	if len(rep.examples) > 0 {
		fmt.Fprintf(&b, "\nFirst differences:\n\n```\n%s\n```\n", strings.Join(rep.examples, "\n"))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		s.t.Errorf("write %s: %v", path, err)
	}
}

// dyingClients lets its replica's first after-1 writes through; the next
// write reaches Salesforce and then never answers (a replica killed mid-batch).
type dyingClients struct {
	inner *sfcreds.Pool
	after int64
	calls atomic.Int64
	once  sync.Once
	died  chan struct{}
	hang  chan struct{}
}

func (d *dyingClients) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	c, err := d.inner.Get(ctx, t)
	if err != nil {
		return nil, err
	}
	return dyingClient{c, d}, nil
}

type dyingClient struct {
	sfcreds.Client
	d *dyingClients
}

func (c dyingClient) UpdateOptOut(ctx context.Context, u []salesforce.Update) ([]salesforce.Result, error) {
	if c.d.calls.Add(1) < c.d.after {
		return c.Client.UpdateOptOut(ctx, u)
	}
	_, _ = c.Client.UpdateOptOut(ctx, u)
	c.d.once.Do(func() { close(c.d.died) })
	<-c.d.hang
	return nil, context.Canceled
}

func (c dyingClient) ReadAndUpdate(ctx context.Context, u []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	if c.d.calls.Add(1) < c.d.after {
		return c.Client.ReadAndUpdate(ctx, u)
	}
	_, _ = c.Client.ReadAndUpdate(ctx, u)
	c.d.once.Do(func() { close(c.d.died) })
	<-c.d.hang
	return nil, context.Canceled
}
