package proof_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

const std = tenant.StandardField

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	// The install's key, as every service sets it at start: lookups by
	// email hash with it.
	logx.SetEmailHashKey([]byte("proof-test-key-0123456789"))
	os.Exit(m.Run())
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	src proof.Source
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p := natstest.Provision(t, natstest.Connect(t))
	l, err := ledger.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, src: proof.Source{Ledger: l, JS: p.JS, Topology: p.Topology}}
}

// event folds one event through the ledger, as the pusher's ingest does.
func (f *fixture) event(id string, a optout.Action, at time.Time, sc, sf, email string) ledger.IngestResult {
	f.t.Helper()
	in := optout.EventInput{ID: id, Action: a, OccurredAt: at, StoredAt: at.Add(time.Second), SalesConnectID: sc, SalesforceID: sf,
		ObjectType: "Contact", Source: "EMAIL_LINK", Reason: "clicked unsubscribe"}
	if email != "" {
		in.EmailHash = logx.HashEmail(email)
	}
	res, err := f.src.Ledger.Writer("acme", std).Ingest(f.ctx, in)
	if err != nil {
		f.t.Fatalf("ingest %s: %v", id, err)
	}
	return res
}

// confirm records Salesforce confirming the field true, as a push does.
func (f *fixture) confirm(res ledger.IngestResult, sf string, opts ...ledger.WriterOption) {
	f.t.Helper()
	w := optout.Write{SalesforceID: sf, Field: std, Value: true, At: time.Now(), OK: true}
	if _, err := f.src.Ledger.Writer("acme", std, opts...).Update(f.ctx, res.Key, optout.WroteStep(w)); err != nil {
		f.t.Fatalf("confirm %s: %v", res.Key, err)
	}
}

func TestFindByEmailMatchesThroughTheKeyedHash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.event("e1", optout.OptOut, t0, "sc-1", "003RO0000035WQgYAM", "Pat@Example.com")
	f.event("e2", optout.OptOut, t0, "sc-2", "003RO0000035WQhYAM", "pat@example.com ") // a duplicate record of the same address
	f.event("e3", optout.OptOut, t0, "sc-3", "003RO0000035WQiYAM", "someone@else.example")

	q, err := proof.ParseQuery("acme", "PAT@example.com", proof.ByAuto)
	if err != nil || q.Email == "" || strings.Contains(q.Email, "example") {
		t.Fatalf("query %+v, %v; want the address's hash, never the address", q, err)
	}
	people, err := proof.Find(f.ctx, f.src, q)
	if err != nil {
		t.Fatal(err)
	}
	var scs []string
	for _, p := range people {
		scs = append(scs, p.Entry.SalesConnectID)
	}
	if len(people) != 2 || !strings.Contains(strings.Join(scs, ","), "sc-1") || !strings.Contains(strings.Join(scs, ","), "sc-2") {
		t.Fatalf("email lookup found %v; want the two records of the address", scs)
	}
	// By Sales Connect id, a person sharing the address is not the same person.
	people, err = proof.Find(f.ctx, f.src, proof.Query{Tenant: "acme", SC: "sc-1"})
	if err != nil || len(people) != 1 || people[0].Entry.SalesConnectID != "sc-1" || len(people[0].History) == 0 {
		t.Fatalf("by sc-1: %d people, %v", len(people), err)
	}
	// The trail says who acted and why, for as long as it is kept.
	if h := people[0].History; h[0].Entry.LastEvent == nil || h[0].Entry.LastEvent.Reason != "clicked unsubscribe" || proof.AppliedEvents(h)[0] != "e1" {
		t.Errorf("the first change does not carry its event e1 and reason: %+v", h[0].Entry.LastEvent)
	}
}

func TestParseQueryErrorsSayWhatIsWrong(t *testing.T) {
	for _, c := range []struct{ id, by, want string }{
		{"not-an-id", proof.BySF, "must be 15 or 18 characters"},
		{"001RO0000035WQgYAM", proof.BySF, "not a Contact (003) or Lead (00Q) id"},
		{"sc-1", proof.ByEmail, "not an email address"},
		{"x", "phone", `by "phone": want auto, sc, sf or email`},
	} {
		_, err := proof.ParseQuery("acme", c.id, c.by)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseQuery(%q, %q) = %v; want %q", c.id, c.by, err, c.want)
		}
	}
}

func TestComplianceSaysWhenAndHowEachOptOutWasHonoured(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// Pushed: received, then confirmed by the pusher.
	a := f.event("a", optout.OptOut, t0, "sc-a", "003RO0000035WQgYAM", "")
	f.confirm(a, "003RO0000035WQgYAM")
	// Still waiting for Salesforce.
	f.event("b", optout.OptOut, t0.Add(time.Minute), "sc-b", "003RO0000035WQhYAM", "")
	// Resubscribed (explicitly, later) before it was honoured.
	f.event("c", optout.OptOut, t0, "sc-c", "003RO0000035WQiYAM", "")
	f.event("c2", optout.Resubscribe, t0.Add(time.Hour), "sc-c", "003RO0000035WQiYAM", "")

	var got []proof.Honour
	if err := proof.Compliance(f.ctx, f.src, "acme", time.Time{}, time.Time{}, func(h proof.Honour) error {
		got = append(got, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	by := map[string]proof.Honour{}
	for _, h := range got {
		by[h.EventID] = h
	}
	if len(got) != 3 {
		t.Fatalf("rows %+v; want one per opt-out (a, b, c)", got)
	}
	if h := by["a"]; h.Status != proof.StatusHonoured || h.How != proof.HowPushed || h.Field != std || !h.RequestedAt.Equal(t0) ||
		h.HonouredAt.Before(h.ReceivedAt) || h.Seconds < h.ReceivedAt.Sub(t0).Seconds() {
		t.Errorf("a = %+v; want honoured by the push, timed from the unsubscribe", h)
	}
	if h := by["b"]; h.Status != proof.StatusPending || !h.HonouredAt.IsZero() || h.Seconds != 0 {
		t.Errorf("b = %+v; want pending", h)
	}
	if h := by["c"]; h.Status != proof.StatusSuperseded {
		t.Errorf("c = %+v; want superseded by the resubscribe", h)
	}
	if got[len(got)-1].EventID != "b" {
		t.Errorf("the pending opt-out comes after the settled ones: %v", got)
	}

	// A range before every receipt holds nothing.
	n := 0
	if err := proof.Compliance(f.ctx, f.src, "acme", time.Time{}, t0, func(proof.Honour) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("range ending before the receipts: %d rows, %v", n, err)
	}

	// The CSV has one header and a row each; JSON is one valid array.
	var buf bytes.Buffer
	sink, err := proof.NewSink[proof.Honour](&buf, proof.CSV, proof.HonourHeader)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range got {
		if err := sink.Write(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != 4 || rows[0][len(rows[0])-1] != "seconds_to_honour" {
		t.Fatalf("csv %v, %v", rows, err)
	}
	buf.Reset()
	js, _ := proof.NewSink[proof.Honour](&buf, proof.JSON, nil)
	for _, h := range got {
		_ = js.Write(h)
	}
	_ = js.Close()
	var back []proof.Honour
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || len(back) != 3 {
		t.Fatalf("json export %q: %v", buf.String(), err)
	}
}

func TestComplianceFollowsAMergedPerson(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// An opt-out known only by Salesforce id, then the first event with both
	// ids merges it into the person's entry, where it is confirmed.
	f.event("sf-only", optout.OptOut, t0, "", "003RO0000035WQgYAM", "")
	linked := f.event("link", optout.OptOut, t0.Add(time.Minute), "sc-m", "003RO0000035WQgYAM", "")
	f.confirm(linked, "003RO0000035WQgYAM")
	var got []proof.Honour
	if err := proof.Compliance(f.ctx, f.src, "acme", time.Time{}, time.Time{}, func(h proof.Honour) error {
		got = append(got, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, h := range got {
		if h.Status != proof.StatusHonoured {
			t.Errorf("%s = %+v; want honoured once the merged person was confirmed", h.EventID, h)
		}
	}
	if len(got) == 0 {
		t.Fatal("no rows")
	}
}
