package main

// The model run: random histories of opt-outs and resubscribes, published
// shuffled and partly duplicated, through two pusher replicas (one killed
// mid-batch) against a sandbox that fails transiently, compared person by
// person with the reference model (internal/refmodel). It began as issue
// 10's model-based test of the pusher.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/optout-sync/optout-sync/internal/refmodel"
	"github.com/optout-sync/optout-sync/internal/teststack"
	"github.com/optout-sync/optout-sync/internal/teststack/pushstack"
	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// The two tenants: acme syncs the sales opt-out field, globex Email Opt Out.
const (
	sales = tenant.DefaultCustomField
	std   = tenant.StandardField
)

var orgs = []sandbox.OrgConfig{
	{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000,
		CustomField: "Marketo_Sales_Opt_Out__c", CustomFieldInstalled: true, CustomFieldWritable: true},
	{Name: "globex", ClientID: "globex-id", ClientSecret: "globex-secret", APIVersions: []string{"62.0"}, DailyAPILimit: 100000},
}

// config is one run's size, seed and report file ("" none).
type config struct {
	persons int
	seed    uint64
	out     string
}

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

// modelField is the Salesforce field the person's tenant syncs (acme: the sales
// field; globex: Email Opt Out).
func modelField(tenantID string) string {
	if tenantID == "acme" {
		return sales
	}
	return std
}

// report counts what the comparison found; every count but the sizes
// must be zero.
type report struct {
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

func (r *report) fail(kind *int, format string, args ...any) {
	*kind++
	if len(r.examples) < 20 {
		r.examples = append(r.examples, fmt.Sprintf(format, args...))
	}
}

func (r *report) problems() int {
	return r.Lost + r.Reverted + r.IgnoredResub + r.OtherField + r.Unsettled + r.UnfoldedEvents + r.DoubleEffects
}

// run is one chaos run, of the program and of the test alike: it fails t
// when the end state differs from the reference model (and writes the
// report to c.out first, when set).
func run(t teststack.TB, c config) *report {
	t.Helper()
	persons, seed := c.persons, c.seed
	t.Logf("seed %d (-seed %d reproduces the histories), %d persons", seed, seed, persons)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// 4 min settle 100,000 persons on a quiet 2-core machine; a shared one
	// is several times slower, and the deadline is only there to end a run
	// that stopped progressing.
	within := 3*time.Minute + time.Duration(persons)*30*time.Millisecond
	s := teststack.New(t, orgs, teststack.Options{Within: within, AckWait: 2 * time.Second})
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
	ns := s.Topo.Namespace

	// Histories: 1–4 events a person, in the past, some sharing a stamp (a
	// tie, which the opt-out wins), some carrying only the Salesforce id.
	now := time.Now()
	people := make([]modelPerson, persons)
	rep := &report{Persons: persons, seed: seed}
	for i := range people {
		p := &people[i]
		p.tenant = []string{"acme", "globex"}[i%2]
		p.sc = fmt.Sprintf("sc-%d", i)
		p.sfID = s.Org(p.tenant).Put(sandbox.Record{Type: "Contact", Email: fmt.Sprintf("m%d@example.com", i)}).ID
		n := 1 + rng.IntN(4)
		for j := range n {
			at := now.Add(-time.Minute - time.Duration(rng.Int64N(int64(10*24*time.Hour))))
			if j > 0 && rng.IntN(6) == 0 {
				at = p.events[rng.IntN(j)].at
			}
			p.events = append(p.events, modelEvent{
				id: fmt.Sprintf("%s-%d-%d", ns, i, j), optOut: rng.IntN(5) < 3, at: at,
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
		o := s.Org(org)
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
	cfg := pushstack.FastConfig()
	killAt := 2 + rng.IntN(4)
	died := make(chan struct{})
	hung := make(chan struct{})
	ctxA, killA := context.WithCancel(s.Ctx)
	pushstack.Start(s, cfg, pushstack.Options{Ctx: ctxA, Clients: &dyingClients{inner: s.Clients, after: int64(killAt), died: died, hang: hung}})
	t.Cleanup(func() { close(hung) }) // runs before the replicas' own cleanups
	pushstack.Start(s, cfg, pushstack.Options{})

	// Published asynchronously (a bounded window of acks outstanding),
	// while both replicas ingest and push.
	start := time.Now()
	acks := make([]jetstream.PubAckFuture, 0, len(pubs))
	for i, pb := range pubs {
		if i == len(pubs)/2 {
			// 401 mid-run: every issued token expires.
			s.Org("acme").ExpireTokens()
			s.Org("globex").ExpireTokens()
		}
		ack, err := publishModelEvent(s, pb.p, pb.e, pb.msgID)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	select {
	case <-s.Prov.JS.PublishAsyncComplete():
	case <-s.Ctx.Done():
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

	settleOrReport(s, within-time.Since(start)-30*time.Second)
	rep.Elapsed = time.Since(start)
	for _, org := range []string{"acme", "globex"} {
		for _, c := range s.Org(org).Calls() {
			if c.Route == sandbox.RouteCollectionsUpdate || c.Route == sandbox.RouteComposite {
				rep.CollectionCalls++
				rep.collectionRecords += c.Records
			}
			if c.FaultID != "" {
				rep.Faulted++
			}
		}
	}

	compareWithModel(s, people, rep)
	if c.out != "" {
		if err := writeReport(c.out, rep); err != nil {
			t.Errorf("report: %v", err)
		}
	}
	if rep.problems() != 0 {
		t.Fatalf("the end state differs from the reference model (seed %d): lost %d, reverted %d, ignored resubscribes %d, other field written %d, unsettled %d, unfolded events %d, double effects %d; first differences:\n%s",
			seed, rep.Lost, rep.Reverted, rep.IgnoredResub, rep.OtherField, rep.Unsettled, rep.UnfoldedEvents, rep.DoubleEffects, strings.Join(rep.examples, "\n"))
	}
	if rep.Faulted == 0 {
		t.Fatal("no injected fault fired: the test did not exercise retries")
	}
	t.Logf("%d persons, %d events (%d published) settled in %s with %d collections calls (%d faulted); 0 lost, 0 reverted, 0 double effects",
		persons, rep.Events, rep.Published, rep.Elapsed.Round(time.Millisecond), rep.CollectionCalls, rep.Faulted)
	return rep
}

// settleOrReport waits until both tenants settle, logging progress every
// 30 s; past the deadline it fails with what is still unsettled.
func settleOrReport(s *teststack.Stack, within time.Duration) {
	s.T.Helper()
	deadline, report := time.Now().Add(within), time.Now().Add(30*time.Second)
	for !(s.Settled("acme") && s.Settled("globex")) {
		if now := time.Now(); now.After(report) || now.After(deadline) {
			var state []string
			for _, tn := range []string{"acme", "globex"} {
				ack, undelivered := s.PendingAcks(tn)
				dirty := s.Dirty(tn)
				state = append(state, fmt.Sprintf("%s: %d undelivered, %d unacked, %d dirty", tn, undelivered, ack, dirty))
			}
			if now.After(deadline) {
				// What holds each dirty person, for the failure's reader.
				for _, tn := range []string{"acme", "globex"} {
					_ = s.Ledger.Dirty(s.Ctx, tn, func(d ledger.DirtyItem) {
						it, err := s.Ledger.Get(s.Ctx, d.Key)
						e, rev := it.Entry, it.Rev
						s.T.Logf("dirty %s (next attempt %s): rev %d, %v: wants %v, state %s (%s), field %s confirmed %v set by us %v, writing %+v, retry %+v",
							d.Key, d.NextAttempt, rev, err, e.OptedOut, e.State, e.Reason, e.Field, e.Confirmed != nil && *e.Confirmed, e.SetByUs, e.Writing, e.Retry)
					})
				}
				s.T.Fatalf("not settled after %s: %s", within, strings.Join(state, "; "))
			}
			s.T.Logf("settling: %s", strings.Join(state, "; "))
			report = now.Add(30 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishModelEvent publishes one event of a person under msgID.
func publishModelEvent(s *teststack.Stack, p *modelPerson, e modelEvent, msgID string) (jetstream.PubAckFuture, error) {
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
	m := nats.NewMsg(s.Topo.EventsSubject(p.tenant))
	m.Data = data
	m.Header.Set(event.HeaderContentType, ctype)
	// A server still busy (deleting an earlier run's streams, or a loaded
	// machine) acks slowly: wait for room rather than the default 200 ms,
	// after which the run would fail before it tested anything.
	ack, err := s.Prov.JS.PublishMsgAsync(m, jetstream.WithMsgID(msgID), jetstream.WithStallWait(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", e.id, err)
	}
	return ack, nil
}

// compareWithModel compares Salesforce, the ledger and the audit trail
// with the reference model, person by person.
func compareWithModel(s *teststack.Stack, people []modelPerson, rep *report) {
	s.T.Helper()
	type live struct {
		key   string
		entry optout.Entry
	}
	bySF := map[string][]live{}
	audit := map[string][]ledger.AuditRecord{}
	for _, tn := range []string{"acme", "globex"} {
		if err := s.Ledger.Scan(s.Ctx, tn, func(it ledger.ScanItem) error {
			if it.Entry.SalesforceID != "" {
				k := tn + "/" + it.Entry.SalesforceID // ids repeat across orgs
				bySF[k] = append(bySF[k], live{it.Key, it.Entry})
			}
			return nil
		}, func(key string, err error) { s.T.Errorf("ledger %s: %v", key, err) }); err != nil {
			s.T.Fatal(err)
		}
		if err := ledger.ReadAudit(s.Ctx, s.Prov.JS, s.Topo, tn, func(r ledger.AuditRecord) error {
			audit[r.Key] = append(audit[r.Key], r)
			return nil
		}); err != nil {
			s.T.Fatal(err)
		}
	}

	for _, p := range people {
		field := modelField(p.tenant)
		latest := p.wish()
		want := latest.Salesforce(field == std)
		rec, ok := s.Org(p.tenant).Get(p.sfID)
		if !ok {
			s.T.Fatalf("record %s vanished from %s", p.sfID, p.tenant)
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
		checkAudit(s, entries[0].key, e, audit[entries[0].key], p, rep)
	}
}

// checkAudit: one audit record per change of the entry, each a real
// change, none twice.
func checkAudit(s *teststack.Stack, key string, e optout.Entry, recs []ledger.AuditRecord, p modelPerson, rep *report) {
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
			s.T.Fatal(err)
		}
		if prev != nil && string(b) == string(prev) {
			rep.fail(&rep.DoubleEffects, "%s %s: audit record %d of %s changes nothing: %s", p.tenant, p.sc, i+1, key, b)
		}
		prev = b
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
