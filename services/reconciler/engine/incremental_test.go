package engine_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/engine"
	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/lock/locktest"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// putPerson writes a ledger entry and its alias, as ingest does for a
// person known by a Salesforce id.
func (h *harness) putPerson(key string, e optout.Entry) {
	h.T.Helper()
	h.PutEntry(key, e)
	if _, err := h.Prov.Aliases.Put(h.Ctx, e.Tenant+"."+e.SalesforceID, []byte(key)); err != nil {
		h.T.Fatal(err)
	}
}

// agreedOrg seeds n Contacts opted out on both sides, confirmed, last
// changed a month ago, plus "a" (a Contact not opted out on either side)
// and "b" (a Contact not opted out in Salesforce, unknown to the ledger):
// a tenant a full run finds in agreement.
func agreedOrg(h *harness, n int) (ids []string, a, b string) {
	h.T.Helper()
	org := h.Org("acme")
	old := time.Now().UTC().Add(-30 * 24 * time.Hour).Truncate(time.Millisecond)
	put := func(optedOut bool) string {
		r := org.Put(sandbox.Record{Type: "Contact", HasOptedOutOfEmail: optedOut, SystemModstamp: old})
		e := optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + r.ID, SalesforceID: r.ID, ObjectType: "Contact",
			OptedOut: optedOut, DecidedAt: old.Add(-time.Hour), Source: "EMAIL_LINK", DecidedBy: "evt-" + r.ID,
			Field: tenant.StandardField, State: optout.StateSynced}
		if optedOut {
			e.Confirmed, e.ConfirmedAt, e.SetByUs = recontest.Ptr(true), old, true
		}
		h.putPerson(optout.Key("acme", "sc-"+r.ID, ""), e)
		return r.ID
	}
	for range n {
		ids = append(ids, put(true))
	}
	a = put(false)
	b = org.Put(sandbox.Record{Type: "Contact", SystemModstamp: old}).ID
	return ids, a, b
}

// queryCalls counts the SOQL pages (first and next) an org answered after
// the first `from` calls of its log.
func queryCalls(h *harness, from int) int {
	n := 0
	for _, c := range h.Org("acme").Calls()[from:] {
		if c.Route == sandbox.RouteQuery || c.Route == sandbox.RouteQueryMore {
			n++
		}
	}
	return n
}

func (h *harness) watermark(tn string) (runs.Watermark, bool) {
	h.T.Helper()
	w, err := h.Store.Watermark(h.Ctx, tn)
	if err != nil {
		return w, false
	}
	return w, true
}

// runJob runs a tenant with the job changed by mod and returns the report.
func (h *harness) runJob(r *replica, tn string, dry bool, mod func(*engine.Job)) runs.Report {
	h.T.Helper()
	id := r.startJob(tn, dry, mod)
	if id == "" {
		h.T.Fatalf("run of %s refused: another replica holds the lease", tn)
	}
	r.wait()
	return h.Report(tn, id)
}

func TestIncrementalRunReadsOnlyChangedRecordsAndFixesBothSides(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	_, a, b := agreedOrg(h, 450)
	// Pages of 200: the full read takes three pages of Contacts.
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.Read.PageSize = 200 }})

	from := len(h.Org("acme").Calls())
	rep := h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Scan == nil || rep.Scan.Kind != runs.ScanFull || rep.Scan.Why != "no complete run yet" {
		t.Fatalf("first run: %s (%s), scan %+v", rep.Status, rep.Reason, rep.Scan)
	}
	if rep.Scan.SalesforceRead != 450 || rep.Counts.InBoth != 450 || rep.Writes.PlannedSalesforce != 0 || rep.Writes.PlannedSalesConnect != 0 {
		t.Fatalf("first run: scan %+v counts %+v writes %+v", rep.Scan, rep.Counts, rep.Writes)
	}
	if n := queryCalls(h, from); n != 4 { // Contacts 3 pages, Leads 1
		t.Fatalf("full read: %d query pages; want 4", n)
	}
	wm, ok := h.watermark("acme")
	if !ok || wm.RunID != rep.RunID || wm.LedgerOptOuts != 450 || wm.Salesforce.IsZero() {
		t.Fatalf("watermark after the full run: %+v (stored %v)", wm, ok)
	}

	// Between runs: a Salesforce user opts "a" out; Sales Connect opts "b"
	// out (a ledger change the push has not carried to Salesforce).
	if err := h.Org("acme").Edit(a, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}
	bKey := optout.Key("acme", "sc-"+b, "")
	h.putPerson(bKey, optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + b, SalesforceID: b, ObjectType: "Contact",
		OptedOut: true, DecidedAt: time.Now().UTC(), Source: "EMAIL_LINK", DecidedBy: "evt-b", Field: tenant.StandardField, State: optout.StatePending})

	from = len(h.Org("acme").Calls())
	rep = h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Scan == nil || rep.Scan.Kind != runs.ScanIncremental {
		t.Fatalf("second run: %s (%s), scan %+v", rep.Status, rep.Reason, rep.Scan)
	}
	// Only what changed was read: one record of Salesforce, one ledger
	// change, one page an object, no lookup.
	if rep.Scan.SalesforceRead != 1 || rep.Scan.LedgerRead != 1 || rep.Counts.LedgerEntries != 2 {
		t.Errorf("incremental read: scan %+v, %d persons compared; want 1 record, 1 ledger change, 2 persons", rep.Scan, rep.Counts.LedgerEntries)
	}
	if n := queryCalls(h, from); n != 2 {
		t.Errorf("incremental read: %d query pages; want 2 (one an object)", n)
	}
	if !rep.Scan.Since.Equal(wm.Salesforce.Add(-10 * time.Minute)) {
		t.Errorf("read since %s; want the watermark %s less the 10m overlap", rep.Scan.Since, wm.Salesforce)
	}
	if c := rep.Counts; c.SalesforceOnly != 1 || c.SalesConnectOnly != 1 || rep.API.Lookups != 0 {
		t.Errorf("counts %+v, lookups %d; want one each way, no lookup", c, rep.API.Lookups)
	}
	// Both sides fixed.
	if e, _ := h.Entry(optout.Key("acme", "sc-"+a, "")); !e.OptedOut || e.Source != "SALESFORCE" {
		t.Errorf("Salesforce-side opt-out of a not applied: %+v", e)
	}
	if r, _ := h.Org("acme").Get(b); !r.HasOptedOutOfEmail {
		t.Error("Sales Connect opt-out of b not written to Salesforce")
	}
	if e, _ := h.Entry(bKey); e.Confirmed == nil || !*e.Confirmed || e.State != optout.StateSynced {
		t.Errorf("b not confirmed: %+v", e)
	}
	wm2, _ := h.watermark("acme")
	if wm2.RunID != rep.RunID || !wm2.Salesforce.After(wm.Salesforce) && !wm2.Salesforce.Equal(wm.Salesforce) ||
		wm2.LedgerSeq <= wm.LedgerSeq || !wm2.FullAt.Equal(wm.FullAt) || wm2.LedgerOptOuts != 450 {
		t.Errorf("watermark after the incremental run %+v; before %+v", wm2, wm)
	}

	// Nothing changed since but the run's own writes: nothing to do.
	rep = h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Scan.Kind != runs.ScanIncremental ||
		rep.Writes.PlannedSalesforce != 0 || rep.Writes.PlannedSalesConnect-rep.Writes.PlannedConfirmations != 0 {
		t.Errorf("third run: %s scan %+v writes %+v", rep.Status, rep.Scan, rep.Writes)
	}
}

func TestFullScanOnRequestAndOnItsCadence(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	agreedOrg(h, 20)
	clock := &recontest.FakeClock{}
	start := time.Now().UTC()
	clock.Set(start)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Clock: clock})

	kind := func(what string, rep runs.Report, want runs.ScanKind, why string) {
		t.Helper()
		if rep.Status != runs.StatusSucceeded || rep.Scan == nil || rep.Scan.Kind != want || !strings.Contains(rep.Scan.Why, why) {
			t.Fatalf("%s: %s (%s), scan %+v; want %s (%q)", what, rep.Status, rep.Reason, rep.Scan, want, why)
		}
	}
	kind("first run", h.runNow(svc, "acme", false), runs.ScanFull, "no complete run yet")
	clock.Set(start.Add(24 * time.Hour))
	kind("a day later", h.runNow(svc, "acme", false), runs.ScanIncremental, "changes since")
	kind("asked for", h.runJob(svc, "acme", false, func(j *engine.Job) { j.Full = "a full scan was requested by test" }),
		runs.ScanFull, "requested by test")
	// The cadence counts from the last full scan, the one asked for.
	clock.Set(start.Add(7*24*time.Hour + time.Hour))
	kind("a week after the first", h.runNow(svc, "acme", false), runs.ScanIncremental, "changes since")
	clock.Set(start.Add(8*24*time.Hour + time.Hour))
	rep := h.runNow(svc, "acme", false)
	kind("a week after the last full scan", rep, runs.ScanFull, "periodic full scan")
	if rep.Scan.SalesforceRead != 20 {
		t.Errorf("the periodic full scan read %d opt-outs; want all 20", rep.Scan.SalesforceRead)
	}
	// A changed field is a full scan: nothing compared before on it.
	h.SetSettings("acme", func(st *tenant.Settings) { st.Field = tenant.SalesOptOut })
	kind("on another field", h.runNow(svc, "acme", false), runs.ScanFull, "field compared changed")
}

func TestARunThatDoesNotCompleteLeavesTheWatermark(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	ids, _, b := agreedOrg(h, 20)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.MaxFailures = 1 }})
	if rep := h.runNow(svc, "acme", false); rep.Status != runs.StatusSucceeded {
		t.Fatalf("first run: %s (%s)", rep.Status, rep.Reason)
	}
	wm, _ := h.watermark("acme")

	// A Sales Connect opt-out Salesforce refuses to take: the run ends with
	// a failed write, which the next run must see again.
	h.putPerson(optout.Key("acme", "sc-"+b, ""), optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + b, SalesforceID: b, ObjectType: "Contact",
		OptedOut: true, DecidedAt: time.Now().UTC(), Source: "EMAIL_LINK", DecidedBy: "evt-b", Field: tenant.StandardField, State: optout.StatePending})
	org := h.Org("acme")
	org.InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, RecordID: b, Status: 400,
		ErrorCode: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "blocked by a validation rule"})
	rep := h.runNow(svc, "acme", false)
	if rep.Scan == nil || rep.Scan.Kind != runs.ScanIncremental || rep.Writes.SalesforceFailed != 1 {
		t.Fatalf("run with a refused write: %s (%s) scan %+v writes %+v", rep.Status, rep.Reason, rep.Scan, rep.Writes)
	}
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("a run with a failed write moved the watermark: %+v; was %+v", got, wm)
	}

	// A run that fails (Salesforce unavailable) leaves it too.
	org.ClearFaults()
	org.InjectFault(sandbox.Fault{Route: sandbox.RouteQuery, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy"})
	if err := org.Edit(ids[0], func(r *sandbox.Record) { r.HasOptedOutOfEmail = false }); err != nil {
		t.Fatal(err)
	}
	rep = h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusFailed {
		t.Fatalf("run against an unavailable Salesforce: %s (%s)", rep.Status, rep.Reason)
	}
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("a failed run moved the watermark: %+v; was %+v", got, wm)
	}

	// Once Salesforce answers, the next run still sees both changes.
	org.ClearFaults()
	rep = h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Scan.Kind != runs.ScanIncremental ||
		rep.Counts.SalesConnectOnly != 1 || rep.Counts.ResubscribesWrittenBack != 1 {
		t.Fatalf("run after the failures: %s (%s) scan %+v counts %+v", rep.Status, rep.Reason, rep.Scan, rep.Counts)
	}
	if r, _ := org.Get(b); !r.HasOptedOutOfEmail {
		t.Error("b not written")
	}
	if r, _ := org.Get(ids[0]); !r.HasOptedOutOfEmail {
		t.Error("the Salesforce-side clear of a confirmed opt-out not written back (optout-wins)")
	}
	if got, _ := h.watermark("acme"); got.RunID != rep.RunID {
		t.Errorf("the completed run did not move the watermark: %+v", got)
	}
}

func TestGuardsHoldInIncrementalRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", func(st *tenant.Settings) { st.ConflictPolicy = tenant.PolicyLatestWins })
	ids, a, _ := agreedOrg(h, 600)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a"})
	if rep := h.runNow(svc, "acme", false); rep.Status != runs.StatusSucceeded {
		t.Fatalf("first run: %s (%s)", rep.Status, rep.Reason)
	}
	wm, _ := h.watermark("acme")

	// A dry run of an incremental run reads, plans and changes nothing.
	if err := h.Org("acme").Edit(a, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}
	revs := h.LedgerRevisions("acme")
	rep := h.runNow(svc, "acme", true)
	if rep.Status != runs.StatusSucceeded || !rep.DryRun || rep.Scan.Kind != runs.ScanIncremental ||
		rep.Counts.SalesforceOnly != 1 || rep.Writes.Remaining != 1 {
		t.Fatalf("dry run: %s (%s) scan %+v counts %+v writes %+v", rep.Status, rep.Reason, rep.Scan, rep.Counts, rep.Writes)
	}
	if !reflect.DeepEqual(h.LedgerRevisions("acme"), revs) || h.StreamMsgs(h.Topo.AppliedStream()) != 0 {
		t.Fatal("the incremental dry run wrote")
	}
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("a dry run moved the watermark: %+v", got)
	}

	// Seven confirmed opt-outs un-ticked in Salesforce since: a bulk edit.
	// The guard's base is the ledger's 600 opt-outs (the last full scan's
	// count), not the few an incremental run compares: limit max(5, 6).
	for _, id := range ids[:7] {
		if err := h.Org("acme").Edit(id, func(r *sandbox.Record) { r.HasOptedOutOfEmail = false }); err != nil {
			t.Fatal(err)
		}
	}
	strict := h.replica(recontest.ReplicaOpts{Name: "replica-b", Cfg: func(c *engine.Config) { c.ResubscribeMin = 5 }})
	rep = h.runNow(strict, "acme", false)
	if rep.Status != runs.StatusStoppedGuard || rep.Scan.Kind != runs.ScanIncremental || rep.Guard == nil ||
		rep.Guard.Resubscribes != 7 || rep.Guard.OptOuts != 600 || rep.Guard.Limit != 6 {
		t.Fatalf("incremental run past the guard: %s (%s) guard %+v", rep.Status, rep.Reason, rep.Guard)
	}
	if !reflect.DeepEqual(h.LedgerRevisions("acme"), revs) || h.SFWrites("acme", "") != 0 {
		t.Fatal("the guard let writes through")
	}
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("a run the guard stopped moved the watermark: %+v", got)
	}
	// The API budget holds too: a run with no budget left stops, and
	// leaves the watermark.
	h.Org("acme").SetDailyAPILimit(1000)
	h.Org("acme").SetAPIUsage(999)
	rep = h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusStoppedBudget {
		t.Fatalf("run without budget: %s (%s)", rep.Status, rep.Reason)
	}
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("a run stopped by its budget moved the watermark: %+v", got)
	}
}

// An incremental run interrupted (its holder's lease gone) is resumed by
// another replica as the same incremental run, from the same watermark,
// and completes it: the watermark moves only then.
func TestInterruptedIncrementalRunIsResumedIncremental(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	_, a, b := agreedOrg(h, 30)
	first := h.replica(recontest.ReplicaOpts{Name: "replica-0"})
	if rep := h.runNow(first, "acme", false); rep.Status != runs.StatusSucceeded {
		t.Fatalf("first run: %s (%s)", rep.Status, rep.Reason)
	}
	wm, _ := h.watermark("acme")
	if err := h.Org("acme").Edit(a, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}
	h.putPerson(optout.Key("acme", "sc-"+b, ""), optout.Entry{Tenant: "acme", SalesConnectID: "sc-" + b, SalesforceID: b, ObjectType: "Contact",
		OptedOut: true, DecidedAt: time.Now().UTC(), Source: "EMAIL_LINK", DecidedBy: "evt-b", Field: tenant.StandardField, State: optout.StatePending})

	rdbA := locktest.Client(t)
	stop := recontest.NewStopAt("before-sf-batch", 1)
	ra := h.replica(recontest.ReplicaOpts{Name: "replica-a", TTL: time.Second, Renew: 100 * time.Millisecond, RDB: rdbA, Hooks: stop.Hooks()})
	rb := h.replica(recontest.ReplicaOpts{Name: "replica-b"})
	t.Cleanup(stop.Let)
	started := ra.start("acme", false)
	<-stop.Reached
	if got, _ := h.watermark("acme"); !reflect.DeepEqual(got, wm) {
		t.Fatalf("an unfinished run moved the watermark: %+v", got)
	}
	if err := rdbA.Del(h.Ctx, h.Prefix+"{acme}:lease").Err(); err != nil {
		t.Fatal(err)
	}
	rep := takeOver(h, rb, "acme", started)
	stop.Let()
	ra.wait()
	if rep.Status != runs.StatusSucceeded || rep.Attempts != 2 || rep.Scan == nil || rep.Scan.Kind != runs.ScanIncremental ||
		rep.Counts.SalesforceOnly != 1 || rep.Counts.SalesConnectOnly != 1 || rep.Writes.SalesforceWritten != 1 {
		t.Fatalf("resumed run: %s (%s) attempts %d scan %+v counts %+v writes %+v", rep.Status, rep.Reason, rep.Attempts, rep.Scan, rep.Counts, rep.Writes)
	}
	if r, _ := h.Org("acme").Get(b); !r.HasOptedOutOfEmail {
		t.Error("b not written by the resumed run")
	}
	if got, _ := h.watermark("acme"); got.RunID != started {
		t.Errorf("the completed run did not move the watermark: %+v", got)
	}
}

// Over the Bulk API 2.0 threshold the incremental read is a Bulk query job
// with the same filter, and decides alike.
func TestIncrementalRunOverBulkAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "acme")
	h.SetSettings("acme", nil)
	ids, a, _ := agreedOrg(h, 10)
	svc := h.replica(recontest.ReplicaOpts{Name: "replica-a", Cfg: func(c *engine.Config) { c.Read.BulkThreshold = 0 }})
	if rep := h.runNow(svc, "acme", false); rep.Status != runs.StatusSucceeded || rep.API.ReadPath["Contact"] != "bulk" {
		t.Fatalf("first run: %s (%s), paths %v", rep.Status, rep.Reason, rep.API.ReadPath)
	}
	if err := h.Org("acme").Edit(a, func(r *sandbox.Record) { r.HasOptedOutOfEmail = true }); err != nil {
		t.Fatal(err)
	}
	if err := h.Org("acme").Edit(ids[0], func(r *sandbox.Record) { r.HasOptedOutOfEmail = false }); err != nil {
		t.Fatal(err)
	}
	rep := h.runNow(svc, "acme", false)
	if rep.Status != runs.StatusSucceeded || rep.Scan.Kind != runs.ScanIncremental || rep.API.ReadPath["Contact"] != "bulk" ||
		rep.Scan.SalesforceRead != 2 || rep.Counts.SalesforceOnly != 1 || rep.Counts.ResubscribesWrittenBack != 1 || rep.API.Lookups != 0 {
		t.Fatalf("incremental run over Bulk: %s (%s) paths %v scan %+v counts %+v lookups %d",
			rep.Status, rep.Reason, rep.API.ReadPath, rep.Scan, rep.Counts, rep.API.Lookups)
	}
	if r, _ := h.Org("acme").Get(ids[0]); !r.HasOptedOutOfEmail {
		t.Error("the cleared opt-out was not written back")
	}
	if e, _ := h.Entry(optout.Key("acme", "sc-"+a, "")); !e.OptedOut {
		t.Error("the Salesforce-side opt-out was not applied")
	}
}
