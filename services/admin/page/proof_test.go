package page_test

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestMain(m *testing.M) {
	logx.SetEmailHashKey([]byte("page-test-key-0123456789")) // as the admin service does at start
	os.Exit(m.Run())
}

func withProof(d *page.Deps) { d.Proof = &proof.Source{} }

// optOut records an opt-out (and, if confirmed, Salesforce confirming it)
// in the test's ledger, as the pusher does.
func (u *ui) optOut(id, sc, sf, email string, confirmed bool) {
	u.t.Helper()
	l, err := ledger.New(u.ctx, u.p)
	if err != nil {
		u.t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour)
	res, err := l.Writer("acme", tenant.StandardField).Ingest(u.ctx, optout.EventInput{ID: id, Action: optout.OptOut, OccurredAt: at, StoredAt: at,
		SalesConnectID: sc, SalesforceID: sf, ObjectType: "Contact", Source: "EMAIL_LINK", Reason: "clicked unsubscribe", EmailHash: logx.HashEmail(email)})
	if err != nil {
		u.t.Fatal(err)
	}
	if confirmed {
		w := optout.Write{SalesforceID: sf, Field: tenant.StandardField, Value: true, At: time.Now(), OK: true}
		if _, err := l.Writer("acme", tenant.StandardField).Update(u.ctx, res.Key, optout.WroteStep(w)); err != nil {
			u.t.Fatal(err)
		}
	}
}

func TestPersonProofByEveryKindOfId(t *testing.T) {
	t.Parallel()
	u := newUI(t, withProof)
	u.optOut("evt-1", "sc-42", "003RO0000035WQgYAM", "Pat@Example.com", true)

	if !strings.Contains(u.get("/admin/tenants/acme"), `action="/admin/tenants/acme/person"`) {
		t.Error("the tenant page has no way to the proof")
	}
	for _, id := range []string{"sc-42", "003RO0000035WQgYAM", "pat@example.com"} {
		code, _, body := u.do("POST", "/admin/tenants/acme/person", url.Values{"id": {id}}, nil)
		if code != http.StatusOK {
			t.Fatalf("search %s: %d\n%s", id, code, body)
		}
		for _, want := range []string{"Ledger entry", "evt-1: UNSUBSCRIBE by EMAIL_LINK", `reason &#34;clicked unsubscribe&#34;`, "HasOptedOutOfEmail = true, confirmed by Salesforce"} {
			if !strings.Contains(body, want) {
				t.Errorf("proof by %s lacks %q", id, want)
			}
		}
		// The address is only in the search box; the links carry its hash.
		if n := strings.Count(strings.ToLower(body), "pat@example.com"); id == "pat@example.com" && n != 1 {
			t.Errorf("the address appears %d times; want only in the search box", n)
		}
		if id == "pat@example.com" && !strings.Contains(body, "id="+strings.Replace(logx.HashEmail(id), ":", "%3a", 1)+"&amp;by=email&amp;format=csv") {
			t.Errorf("the download link does not name the person by the hash")
		}
		if id == "pat@example.com" {
			if code, _, body := u.do("GET", "/admin/tenants/acme/person?by=email&format=json&id="+url.QueryEscape(logx.HashEmail(id)), nil, nil); code != http.StatusOK || !strings.Contains(body, `"eventId":"evt-1"`) {
				t.Errorf("download by the hash: %d %s", code, body)
			}
		}
	}
	// The download is the export's rows.
	code, h, body := u.do("GET", "/admin/tenants/acme/person?id=sc-42&format=csv", nil, nil)
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Disposition"), "attachment") || err != nil || len(rows) != 3 || rows[0][0] != "tenant" {
		t.Fatalf("csv download: %d %v %v\n%s", code, h, err, body)
	}
	code, _, body = u.do("GET", "/admin/tenants/acme/person?id=sc-42&format=json", nil, nil)
	var back []proof.Row
	if err := json.Unmarshal([]byte(body), &back); code != http.StatusOK || err != nil || len(back) != 2 || back[0].EventID != "evt-1" {
		t.Fatalf("json download: %d %v %s", code, err, body)
	}
	// Unknown and malformed ids are answered, not failed.
	if code, _, body := u.do("GET", "/admin/tenants/acme/person?id=sc-nobody", nil, nil); code != http.StatusNotFound || !strings.Contains(body, "has no person with Sales Connect id sc-nobody") {
		t.Errorf("unknown person: %d\n%s", code, body)
	}
	if code, _, body := u.do("GET", "/admin/tenants/acme/person?id=12&by=sf", nil, nil); code != http.StatusUnprocessableEntity || !strings.Contains(body, "must be 15 or 18 characters") {
		t.Errorf("malformed id: %d\n%s", code, body)
	}
}

func TestComplianceExportDownload(t *testing.T) {
	t.Parallel()
	u := newUI(t, withProof)
	u.optOut("evt-a", "sc-a", "003RO0000035WQgYAM", "a@example.com", true)
	u.optOut("evt-b", "sc-b", "003RO0000035WQhYAM", "b@example.com", false)
	today := time.Now().UTC().Format(time.DateOnly)
	code, h, body := u.do("GET", "/admin/tenants/acme/compliance?from="+today+"&to="+today, nil, nil)
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != http.StatusOK || h.Get("Content-Type") != "text/csv; charset=utf-8" || err != nil || len(rows) != 3 {
		t.Fatalf("compliance csv: %d %v\n%s", code, err, body)
	}
	status := map[string]string{}
	for _, r := range rows[1:] {
		status[r[1]] = r[10]
	}
	if status["evt-a"] != proof.StatusHonoured || status["evt-b"] != proof.StatusPending {
		t.Errorf("statuses %v; want evt-a honoured, evt-b pending", status)
	}
	// A range before both receipts is empty, and a wrong date is explained.
	if _, _, body := u.do("GET", "/admin/tenants/acme/compliance?to=2020-01-01&format=json", nil, nil); strings.TrimSpace(body) != "[]" {
		t.Errorf("empty range: %s", body)
	}
	if code, _, body := u.do("GET", "/admin/tenants/acme/compliance?from=yesterday", nil, nil); code != http.StatusBadRequest || !strings.Contains(body, "enter it as YYYY-MM-DD") {
		t.Errorf("bad date: %d\n%s", code, body)
	}
}

func TestWithoutProofThePagesAreNotServed(t *testing.T) {
	t.Parallel()
	u := newUI(t)
	if code, _, _ := u.do("GET", "/admin/tenants/acme/person?id=sc-1", nil, nil); code != http.StatusNotFound {
		t.Errorf("person page without a ledger: %d", code)
	}
}
