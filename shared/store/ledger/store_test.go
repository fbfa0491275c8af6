package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const (
	std     = tenant.StandardField
	sales   = tenant.DefaultCustomField
	contact = "003RO0000035WQgYAM"
	// otherContact is a second person's record.
	otherContact = "003RO0000035WQhYAM"
	thirdContact = "003RO0000035WQiYAM"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T) (*ledger.Ledger, *natsx.Provisioned, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	l, err := ledger.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	return l, p, ctx
}

func ev(id string, a optout.Action, at time.Time, sc, sf string) optout.EventInput {
	typ := ""
	if sf != "" {
		typ = "Contact"
	}
	return optout.EventInput{ID: id, Action: a, OccurredAt: at, StoredAt: at.Add(time.Second), SalesConnectID: sc, SalesforceID: sf, ObjectType: typ, Source: "EMAIL_LINK"}
}

// audit returns the tenant's audit records per key, waiting for the
// server-side source to catch up with want records in all.
func audit(t *testing.T, ctx context.Context, p *natsx.Provisioned, want int) map[string][]ledger.AuditRecord {
	t.Helper()
	for {
		got := map[string][]ledger.AuditRecord{}
		n := 0
		if err := ledger.ReadAudit(ctx, p.JS, p.Topology, "acme", func(r ledger.AuditRecord) error {
			got[r.Key] = append(got[r.Key], r)
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n >= want || ctx.Err() != nil {
			return got
		}
		time.Sleep(20 * time.Millisecond) // the source copies asynchronously
	}
}

func TestNewRefusesATopologyWithoutAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := natstest.Provision(t, natstest.Connect(t))
	cfg, err := p.JS.Stream(ctx, p.Topology.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.CachedInfo().Config
	c.Sources = nil
	c.Subjects = []string{p.Topology.Namespace + ".nothing"}
	if _, err := p.JS.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.New(ctx, p); err == nil {
		t.Fatal("ledger.New accepted an audit stream that does not source the ledger")
	}
	if _, err := ledger.New(ctx, &natsx.Provisioned{}); err == nil {
		t.Fatal("ledger.New accepted a topology without buckets")
	}
}

func TestConcurrentIngestsOfOnePersonAreAllKeptAndAuditedOnce(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			a := optout.OptOut
			if i%2 == 1 {
				a = optout.Resubscribe
			}
			if _, err := l.Writer("acme", sales).Ingest(ctx, ev(fmt.Sprint("e", i), a, t0.Add(time.Duration(i)*time.Minute), "sc-1", contact)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	key := optout.Key("acme", "sc-1", "")
	it, err := l.Get(ctx, key)
	e := it.Entry
	if err != nil {
		t.Fatal(err)
	}
	// e15 (a resubscribe, the newest) is the wish whatever the arrival order.
	if len(e.RecentEvents) != 16 || e.OptedOut || e.DecidedBy != "e15" || !e.LastOptOutAt.Equal(t0.Add(14*time.Minute)) {
		t.Fatalf("entry %+v; want all 16 events kept and e15 deciding", e)
	}
	recs := audit(t, ctx, p, 16)[key]
	if len(recs) != 16 {
		t.Fatalf("%d audit records; want one per change (16)", len(recs))
	}
	for i, r := range recs {
		if r.Entry.Version != uint64(i+1) || r.Revision == 0 {
			t.Fatalf("audit record %d: version %d revision %d; want versions 1..16 in order", i, r.Entry.Version, r.Revision)
		}
	}
	// A replay changes nothing and writes no record.
	res, err := l.Writer("acme", sales).Ingest(ctx, ev("e3", optout.Resubscribe, t0, "sc-1", contact))
	if err != nil || res.Changed {
		t.Fatalf("replay: %+v %v", res, err)
	}
}

func TestOnePersonUnderEitherIdIsOneEntry(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	// An opt-out known only by Salesforce id, then the first event with both
	// ids: the sf entry is merged into the person and retired.
	if _, err := l.Writer("acme", sales).Ingest(ctx, ev("sf-only", optout.OptOut, t0.Add(time.Hour), "", contact)); err != nil {
		t.Fatal(err)
	}
	res, err := l.Writer("acme", sales).Ingest(ctx, ev("older-resub", optout.Resubscribe, t0, "sc-7", contact))
	if err != nil {
		t.Fatal(err)
	}
	person := optout.Key("acme", "sc-7", "")
	if res.Key != person || !res.Entry.OptedOut || res.Won {
		t.Fatalf("linking event: %+v; want the person opted out (the older resubscribe does not win)", res)
	}
	it, err := l.Get(ctx, optout.Key("acme", "", contact))
	sf := it.Entry
	if err != nil || sf.MergedInto != person || sf.State != optout.StateRetired {
		t.Fatalf("sf entry %+v %v; want retired into %s", sf, err, person)
	}
	// Later events by Salesforce id alone reach the person.
	res, err = l.Writer("acme", sales).Ingest(ctx, ev("sf-later", optout.Resubscribe, t0.Add(2*time.Hour), "", contact))
	if err != nil || res.Key != person || res.Entry.OptedOut {
		t.Fatalf("sf-only event after the link: %+v %v; want it folded into %s", res, err, person)
	}
	n := 0
	if err := l.Scan(ctx, "acme", func(it ledger.ScanItem) error { n++; return nil }, nil); err != nil || n != 1 {
		t.Fatalf("scan saw %d entries (%v); want one person", n, err)
	}
	_ = p
}

func TestSalesforceOnlyEventRacingTheLinkIsNeverSplit(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	for i := range 20 {
		sc := fmt.Sprint("sc-race-", i)
		sfid := fmt.Sprintf("003RO00000%05dAAA", i)
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := l.Writer("acme", sales).Ingest(ctx, ev(sc+"-link", optout.Resubscribe, t0, sc, sfid)); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if _, err := l.Writer("acme", sales).Ingest(ctx, ev(sc+"-sf", optout.OptOut, t0.Add(time.Minute), "", sfid)); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		it, err := l.Get(ctx, optout.Key("acme", sc, ""), ledger.FollowMerges())
		e := it.Entry
		if err != nil || !e.OptedOut || !e.Seen(sc+"-sf") {
			t.Fatalf("person %d: %+v %v; want the newer Salesforce-only opt-out in the person's entry", i, e, err)
		}
	}
}

func TestDirtySetFollowsTheEntries(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	dirty := func() []string {
		var keys []string
		if err := l.Dirty(ctx, "acme", func(d ledger.DirtyItem) { keys = append(keys, d.Key) }); err != nil {
			t.Fatal(err)
		}
		sort.Strings(keys)
		return keys
	}
	res, err := l.Writer("acme", std).Ingest(ctx, ev("a", optout.OptOut, t0, "sc-a", contact))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("b", optout.OptOut, t0, "sc-b", "")); err != nil {
		t.Fatal(err)
	}
	if got := dirty(); fmt.Sprint(got) != fmt.Sprint([]string{res.Key}) {
		t.Fatalf("dirty %v; want only the opt-out with a Salesforce id", got)
	}
	// A write based on a revision that moved is not a confirmation.
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("a2", optout.OptOut, t0.Add(time.Minute), "sc-a", contact)); err != nil {
		t.Fatal(err)
	}
	w, err := l.Writer("acme", std).Update(ctx, res.Key, optout.WroteStep(optout.Write{SalesforceID: contact, Field: std, Value: true, At: t0, OK: true}), ledger.BasedOn(res.Rev))
	e := w.Entry
	if err != nil || e.Confirmed != nil || !e.Dirty(std) || len(dirty()) != 1 {
		t.Fatalf("stale write: %+v %v; want Salesforce's value unknown and the person still dirty", e, err)
	}
	it, _ := l.Get(ctx, res.Key)
	cur, rev := it.Entry, it.Rev
	w, err = l.Writer("acme", std).Update(ctx, res.Key, optout.WroteStep(optout.Write{SalesforceID: contact, Field: std, Value: true, At: t0, OK: true}), ledger.BasedOn(rev))
	e = w.Entry
	if err != nil || e.Confirmed == nil || !*e.Confirmed || e.State != optout.StateSynced || len(dirty()) != 0 {
		t.Fatalf("current write: %+v (was %+v) %v; dirty %v", e, cur, err, dirty())
	}
}

func TestLearnIsFencedAndFoldedLikeAnEvent(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	key := optout.Key("acme", "", contact)
	o := optout.Observation{EventID: "r1", SalesforceID: contact, ObjectType: "Contact", Field: std, Value: true, At: t0, Now: t0}
	if res, err := l.Writer("acme", std, ledger.Fenced(testFence(8))).Update(ctx, key, optout.LearntStep(o)); err != nil || !res.Changed {
		t.Fatalf("learn: %v %v", res.Changed, err)
	}
	o.EventID = "r2"
	if _, err := l.Writer("acme", std, ledger.Fenced(testFence(7))).Update(ctx, key, optout.LearntStep(o)); !errors.Is(err, ledger.ErrFenced) {
		t.Fatalf("stale holder: %v; want ErrFenced", err)
	}
	it, err := l.Get(ctx, key)
	e, fence := it.Entry, it.Fence
	if err != nil || fence != 8 || !e.OptedOut || e.Confirmed == nil || !*e.Confirmed || e.SetByUs || e.Dirty(std) {
		t.Fatalf("entry %+v fence %d %v", e, fence, err)
	}
	// A non-fenced writer (ingest) resets the stamp; its write is kept.
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("x", optout.Resubscribe, t0.Add(time.Hour), "", contact)); err != nil {
		t.Fatal(err)
	}
	if it, _ := l.Get(ctx, key); it.Fence != 0 || it.Entry.OptedOut || !it.Entry.WantsStandard() {
		t.Fatalf("after ingest: fence %d entry %+v; want the resubscribe kept and Email Opt Out still wanted", it.Fence, it.Entry)
	}
}

func TestScanStreamsOneTenant(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	n := 0
	if err := l.Scan(ctx, "acme", func(ledger.ScanItem) error { n++; return nil }, nil); err != nil || n != 0 {
		t.Fatalf("empty scan: %d entries, %v", n, err)
	}
	var want []string
	for i := range 300 {
		res, err := l.Writer("acme", std).Ingest(ctx, ev(fmt.Sprint("e", i), optout.OptOut, t0, fmt.Sprintf("sc-%d", i), ""))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, res.Key)
	}
	// Another tenant, a deleted entry and a corrupt value are not delivered.
	if _, err := l.Writer("acmeco", std).Ingest(ctx, ev("o", optout.OptOut, t0, "sc-x", "")); err != nil {
		t.Fatal(err)
	}
	if err := p.Ledger.Delete(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	if _, err := p.Ledger.Put(ctx, "acme.sc.corrupt", []byte(`{not json`)); err != nil {
		t.Fatal(err)
	}
	var got, bad []string
	err := l.Scan(ctx, "acme", func(it ledger.ScanItem) error {
		if it.Entry.Tenant != "acme" || it.Revision == 0 {
			return fmt.Errorf("item %+v", it)
		}
		got = append(got, it.Key)
		return nil
	}, func(key string, _ error) { bad = append(bad, key) })
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scan delivered %d keys; want %d", len(got), len(want))
	}
	if len(bad) != 1 || bad[0] != "acme.sc.corrupt" {
		t.Fatalf("bad = %v", bad)
	}
	stop := errors.New("stop")
	if err := l.Scan(ctx, "acme", func(ledger.ScanItem) error { return stop }, nil); !errors.Is(err, stop) {
		t.Fatalf("scan error %v; want fn's error", err)
	}
}

func TestGetUnknownPerson(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	if _, err := l.Get(ctx, optout.Key("acme", "nobody", "")); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("err = %v; want ErrNotFound", err)
	}
}

// TestWaitAuditedReturnsOnceEveryChangeIsInTheTrail: right after the changes,
// on a newly provisioned topology (whose audit source is still being set
// up), one read after WaitAudited sees every change, in order.
func TestWaitAuditedReturnsOnceEveryChangeIsInTheTrail(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	if err := ledger.WaitAudited(ctx, p.JS, p.Topology); err != nil {
		t.Fatalf("an empty ledger: %v", err)
	}
	ingest := []optout.EventInput{
		ev("w1", optout.OptOut, t0, "", contact),
		ev("w2", optout.Resubscribe, t0.Add(time.Hour), "sc-w", contact), // merges the first entry
		ev("w3", optout.OptOut, t0.Add(2*time.Hour), "sc-w", contact),
	}
	for _, in := range ingest {
		if _, err := l.Writer("acme", sales).Ingest(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := p.JS.Stream(ctx, "KV_"+p.Topology.LedgerBucket())
	if err != nil {
		t.Fatal(err)
	}
	want := kv.CachedInfo().State.LastSeq
	if err := ledger.WaitAudited(ctx, p.JS, p.Topology); err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	if err := ledger.ReadAudit(ctx, p.JS, p.Topology, "acme", func(r ledger.AuditRecord) error {
		revs = append(revs, r.Revision)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if uint64(len(revs)) != want || !sort.SliceIsSorted(revs, func(i, j int) bool { return revs[i] < revs[j] }) || revs[len(revs)-1] != want {
		t.Fatalf("audit revisions after WaitAudited = %v; want 1..%d", revs, want)
	}
}

// TestWaitAuditedEndsWithItsContext: an audit stream that copies nothing
// (its source removed) never catches up; the wait ends with the context.
func TestWaitAuditedEndsWithItsContext(t *testing.T) {
	t.Parallel()
	l, p, ctx := open(t)
	s, err := p.JS.Stream(ctx, p.Topology.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	c.Sources = nil
	c.Subjects = []string{p.Topology.Namespace + ".nothing"}
	if _, err := p.JS.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Writer("acme", sales).Ingest(ctx, ev("x1", optout.OptOut, t0, "sc-x", contact)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := ledger.WaitAudited(wctx, p.JS, p.Topology); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitAudited on an audit stream that copies nothing = %v; want the context's error", err)
	}
}

// WroteFrom starts from the entry its caller read: when that entry moved,
// the compare-and-set refuses it and the write is judged on the entry as
// stored, exactly as Wrote judges it.
func TestWroteFromAStaleReadIsNoConfirmation(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	res, err := l.Writer("acme", std).Ingest(ctx, ev("a", optout.OptOut, t0, "sc-a", contact))
	if err != nil {
		t.Fatal(err)
	}
	it, err := l.Get(ctx, res.Key)
	read, readRev := it.Entry, it.Rev
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("a2", optout.OptOut, t0.Add(time.Minute), "sc-a", contact)); err != nil {
		t.Fatal(err)
	}
	w := optout.Write{SalesforceID: contact, Field: std, Value: true, At: t0, OK: true}
	at, err := l.Writer("acme", std).Update(ctx, res.Key, optout.WroteStep(w), ledger.From(ledger.Snapshot{Entry: read, Rev: readRev}))
	e := at.Entry
	if err != nil || e.Confirmed != nil || !e.Dirty(std) {
		t.Fatalf("stale read: %+v %v; want Salesforce's value unknown and the person still dirty", e, err)
	}
	it, err = l.Get(ctx, res.Key)
	read, readRev = it.Entry, it.Rev
	if err != nil {
		t.Fatal(err)
	}
	at, err = l.Writer("acme", std).Update(ctx, res.Key, optout.WroteStep(w), ledger.From(ledger.Snapshot{Entry: read, Rev: readRev}))
	e = at.Entry
	if err != nil || e.Confirmed == nil || !*e.Confirmed || e.State != optout.StateSynced {
		t.Fatalf("current read: %+v %v; want confirmed and synced", e, err)
	}
	var dirty []string
	if err := l.Dirty(ctx, "acme", func(d ledger.DirtyItem) { dirty = append(dirty, d.Key) }); err != nil || len(dirty) != 0 {
		t.Fatalf("dirty set %v (%v); want empty after the confirmation", dirty, err)
	}
}

// A writer that knows the revision of the person's dirty marker (the fold
// that put it hands it to the push) removes it after a confirmation; and
// when another writer has put it again since, the confirmation still
// leaves the dirty set holding exactly the persons with a write due.
func TestAConfirmationRemovesTheMarker(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	dirtyKeys := func() []string {
		t.Helper()
		var keys []string
		if err := l.Dirty(ctx, "acme", func(d ledger.DirtyItem) { keys = append(keys, d.Key) }); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	w := optout.Write{SalesforceID: contact, Field: std, Value: true, At: t0, OK: true}

	a, err := l.Writer("acme", std).Ingest(ctx, ev("a", optout.OptOut, t0, "sc-a", contact))
	if err != nil || a.Mark == 0 {
		t.Fatalf("ingest: mark %d, %v; want the marker's revision", a.Mark, err)
	}
	at, err := l.Writer("acme", std).Update(ctx, a.Key, optout.WroteStep(w), ledger.From(ledger.Snapshot{Entry: a.Entry, Rev: a.Rev, Mark: a.Mark}))
	if e := at.Entry; err != nil || e.State != optout.StateSynced {
		t.Fatalf("confirm: %+v %v; want synced", e, err)
	}
	if keys := dirtyKeys(); len(keys) != 0 {
		t.Fatalf("dirty set %v after confirming with the known marker; want empty", keys)
	}

	// Another writer puts b's marker again after the fold's put.
	b, err := l.Writer("acme", std).Ingest(ctx, ev("b", optout.OptOut, t0, "sc-b", otherContact))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Writer("acme", std).Mark(ctx, b.Key, &b.Entry); err != nil {
		t.Fatal(err)
	}
	wb := optout.Write{SalesforceID: otherContact, Field: std, Value: true, At: t0, OK: true}
	if at, err := l.Writer("acme", std).Update(ctx, b.Key, optout.WroteStep(wb), ledger.From(ledger.Snapshot{Entry: b.Entry, Rev: b.Rev, Mark: b.Mark})); err != nil || at.Entry.State != optout.StateSynced {
		t.Fatalf("confirm b: %+v %v; want synced", at.Entry, err)
	}
	if keys := dirtyKeys(); len(keys) != 0 {
		t.Fatalf("dirty set %v after confirming a person whose marker was put again; want empty", keys)
	}

	// A newer opt-out folded after the push read c: the confirmation of
	// the older read is stale and c stays dirty, marker and all.
	c, err := l.Writer("acme", std).Ingest(ctx, ev("c", optout.OptOut, t0, "sc-c", thirdContact))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Writer("acme", std).Ingest(ctx, ev("c2", optout.OptOut, t0.Add(time.Minute), "sc-c", thirdContact)); err != nil {
		t.Fatal(err)
	}
	wc := optout.Write{SalesforceID: thirdContact, Field: std, Value: true, At: t0, OK: true}
	if at, err := l.Writer("acme", std).Update(ctx, c.Key, optout.WroteStep(wc), ledger.From(ledger.Snapshot{Entry: c.Entry, Rev: c.Rev, Mark: c.Mark})); err != nil || !at.Entry.Dirty(std) {
		t.Fatalf("stale confirm of c: %+v %v; want c still dirty", at.Entry, err)
	}
	if keys := dirtyKeys(); len(keys) != 1 || keys[0] != c.Key {
		t.Fatalf("dirty set %v; want exactly %s", keys, c.Key)
	}
}

// testFence is a lease that always holds, with a fixed token.
type testFence uint64

func (f testFence) Fence() uint64 { return uint64(f) }
func (testFence) Valid() bool     { return true }

// expiredLease is a lease that ran out by its holder's clock.
type expiredLease struct{}

func (expiredLease) Fence() uint64 { return 9 }
func (expiredLease) Valid() bool   { return false }

// A fenced writer checks its lease itself before every write: a holder
// paused past its lease writes nothing, whatever its caller checked.
func TestFencedWriterRefusesOnceItsLeaseExpired(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	key := optout.Key("acme", "", contact)
	o := optout.Observation{EventID: "r1", SalesforceID: contact, ObjectType: "Contact", Field: std, Value: true, At: t0, Now: t0}
	if _, err := l.Writer("acme", std, ledger.Fenced(expiredLease{})).Update(ctx, key, optout.LearntStep(o)); !errors.Is(err, ledger.ErrLeaseExpired) {
		t.Fatalf("learn with an expired lease: %v; want ErrLeaseExpired", err)
	}
	if _, err := l.Get(ctx, key); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("after the refused write: %v; want no entry", err)
	}
}

// raisedFence is a lease still valid by its clock whose fence a newer
// holder has raised.
type raisedFence struct{ testFence }

var errRaised = errors.New("a newer holder raised the fence")

func (raisedFence) CheckFence(context.Context) error { return errRaised }

// Check is what a writer's caller asks before acting where the store cannot
// fence it (a Salesforce call): an unfenced writer may always act; a fenced
// one not once its lease expired by its clock, nor once its fence was raised.
func TestWriterCheckAnswersForItsFence(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	if err := l.Writer("acme", std).Check(ctx); err != nil {
		t.Fatalf("unfenced writer: %v; want nil", err)
	}
	if err := l.Writer("acme", std, ledger.Fenced(testFence(3))).Check(ctx); err != nil {
		t.Fatalf("fenced writer holding its lease: %v; want nil", err)
	}
	if err := l.Writer("acme", std, ledger.Fenced(expiredLease{})).Check(ctx); !errors.Is(err, ledger.ErrLeaseExpired) {
		t.Fatalf("expired lease: %v; want ErrLeaseExpired", err)
	}
	if err := l.Writer("acme", std, ledger.Fenced(raisedFence{3})).Check(ctx); !errors.Is(err, errRaised) {
		t.Fatalf("raised fence: %v; want the fence's own error", err)
	}
}

// A fenced writer asks its fence record before every write: an entry the
// newer holder has not written yet carries no newer stamp to refuse the
// older holder, so the record must.
func TestFencedWriterRefusesOnceItsFenceWasRaised(t *testing.T) {
	t.Parallel()
	l, _, ctx := open(t)
	key := optout.Key("acme", "", contact)
	o := optout.Observation{EventID: "r1", SalesforceID: contact, ObjectType: "Contact", Field: std, Value: true, At: t0, Now: t0}
	if _, err := l.Writer("acme", std, ledger.Fenced(raisedFence{3})).Update(ctx, key, optout.LearntStep(o)); !errors.Is(err, errRaised) {
		t.Fatalf("learn after a newer holder raised the fence: %v; want the fence's error", err)
	}
	if _, err := l.Get(ctx, key); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("after the refused write: %v; want no entry", err)
	}
	if _, err := l.Writer("acme", std, ledger.Fenced(testFence(3))).Update(ctx, key, optout.LearntStep(o)); err != nil {
		t.Fatalf("learn while holding the newest fence: %v", err)
	}
}
