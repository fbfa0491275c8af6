package suppression

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

const testToken = "acme-token-0123456789"

func testAPI(t *testing.T) *API {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("acme:"+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := New(Config{TokensFile: file, MaxLag: 2 * time.Second}, zerolog.Nop())
	a.HashKeyed = func() bool { return true }
	return a
}

func ask(t *testing.T, a *API, query string) (int, Answer) {
	t.Helper()
	req := httptest.NewRequest("GET", "/v1/tenants/acme/suppression?"+query, nil)
	req.SetPathValue("tenant", "acme")
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	var ans Answer
	_ = json.Unmarshal(rec.Body.Bytes(), &ans)
	return rec.Code, ans
}

func entry(sc, sf, email string, optedOut bool, at time.Time) optout.Entry {
	e := optout.Entry{Tenant: "acme", SalesConnectID: sc, SalesforceID: sf, ObjectType: "Contact", OptedOut: optedOut, DecidedAt: at, DecidedBy: "ev", Source: "EMAIL_LINK"}
	if email != "" {
		e.EmailHash = logx.HashEmail(email)
	}
	return e
}

// TestALaggingIndexNeverAnswersAllowed: before the first read is done and
// when the index is further behind than MaxLag, a person not found
// suppressed is "unknown" (503); one found suppressed is still suppressed.
func TestALaggingIndexNeverAnswersAllowed(t *testing.T) {
	a := testAPI(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a.idx.Apply(ledger.Change{Key: optout.Key("acme", "sc-1", ""), Entry: entry("sc-1", "", "x@example.com", true, at)})
	if code, ans := ask(t, a, "salesConnectId=sc-2"); code != http.StatusServiceUnavailable || ans.Result != Unknown || !strings.Contains(ans.Reason, "still reading") {
		t.Errorf("before the first read: %d %+v", code, ans)
	}
	a.idx.MarkCurrent(time.Now().Add(-time.Minute))
	if code, ans := ask(t, a, "salesConnectId=sc-2"); code != http.StatusServiceUnavailable || ans.Result != Unknown || ans.Complete || !strings.Contains(ans.Reason, "behind") {
		t.Errorf("a minute behind: %d %+v", code, ans)
	}
	if code, ans := ask(t, a, "email=x%40example.com"); code != http.StatusOK || ans.Result != Suppressed || ans.Complete || !ans.Since.Equal(at) {
		t.Errorf("a suppressed person, a minute behind: %d %+v", code, ans)
	}
	a.idx.MarkCurrent(time.Now())
	if code, ans := ask(t, a, "salesConnectId=sc-2"); code != http.StatusOK || ans.Result != Allowed || !ans.Complete {
		t.Errorf("current: %d %+v", code, ans)
	}
}

// TestTheIndexFollowsChanges: a changed address, a merge and a deletion
// take the person out of the lookups they no longer match.
func TestTheIndexFollowsChanges(t *testing.T) {
	x := NewIndex()
	at := time.Now()
	key := optout.Key("acme", "sc-1", "")
	x.Apply(ledger.Change{Key: key, Entry: entry("sc-1", "003000000000001AAA", "old@example.com", true, at)})
	if n := len(x.Lookup("acme", ByEmail, logx.HashEmail("old@example.com"))); n != 1 {
		t.Fatalf("by email: %d records", n)
	}
	x.Apply(ledger.Change{Key: key, Entry: entry("sc-1", "003000000000001AAA", "new@example.com", true, at)})
	if n := len(x.Lookup("acme", ByEmail, logx.HashEmail("old@example.com"))); n != 0 {
		t.Errorf("the old address still matches %d records", n)
	}
	if r := x.Lookup("acme", ByEmail, logx.HashEmail("new@example.com")); len(r) != 1 || r[0].SalesConnectID != "sc-1" || !r[0].Suppressed {
		t.Errorf("the new address: %+v", r)
	}
	// A Salesforce-only entry merged into the person: gone from the lookups.
	sfKey := optout.Key("acme", "", "003000000000002AAA")
	x.Apply(ledger.Change{Key: sfKey, Entry: entry("", "003000000000002AAA", "new@example.com", true, at)})
	if n := len(x.Lookup("acme", ByEmail, logx.HashEmail("new@example.com"))); n != 2 {
		t.Errorf("two records share the address: %d", n)
	}
	merged := entry("", "003000000000002AAA", "new@example.com", true, at)
	merged.MergedInto = key
	x.Apply(ledger.Change{Key: sfKey, Entry: merged})
	if n := len(x.Lookup("acme", BySalesforceID, "003000000000002AAA")); n != 0 {
		t.Errorf("a retired entry still matches: %d", n)
	}
	x.Apply(ledger.Change{Key: key, Deleted: true})
	if n := len(x.Lookup("acme", BySalesforceID, "003000000000001AAA")) + len(x.Lookup("acme", ByEmail, logx.HashEmail("new@example.com"))); n != 0 || x.Size() != 0 {
		t.Errorf("a deleted person still matches: %d, size %d", n, x.Size())
	}
}

// TestTokensFile: lines name the tenant and line number on error, never the token.
func TestTokensFile(t *testing.T) {
	for _, c := range []struct{ text, err string }{
		{"acme:short", "line 1: the token must have at least 16"},
		{"# c\n\nbad tenant:" + testToken, "line 3: want tenant:token"},
		{"acme:" + testToken + "\nother:" + testToken, "line 2: the token is already given to another tenant"},
		{"# nothing\n", "no token"},
	} {
		_, err := parseTokens([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), testToken) {
			t.Errorf("%q: %v, want %q", c.text, err, c.err)
		}
	}
	tk, err := parseTokens([]byte("acme:" + testToken + "\nacme:" + testToken + "-next\nbeta:beta-token-0123456789\n"))
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]string{testToken: "acme", testToken + "-next": "acme", "beta-token-0123456789": "beta", "nope-0123456789abcdef": ""} {
		if got, _ := tk.tenantOf(tok); got != want {
			t.Errorf("%s: tenant %q, want %q", tok, got, want)
		}
	}
}

// TestWithoutTokensNoIndexIsKept: with the API off (no tokens file) it is
// not Enabled, so the admin service feeds it nothing and holds no index
// (app's TestOneLedgerFeedServesTheIndexAndTheClock checks the wiring).
func TestWithoutTokensNoIndexIsKept(t *testing.T) {
	a := New(Config{MaxLag: 2 * time.Second}, zerolog.Nop())
	if a.Enabled() {
		t.Fatal("an API without tokens is enabled")
	}
	if !testAPI(t).Enabled() {
		t.Fatal("an API with tokens is not enabled")
	}
}

// TestPersonsSharingAnAddressOrAnId: several persons of one address, one
// leaving from the middle of them, and a Contact found by the id of the
// Lead it was converted from; another tenant's persons never match.
func TestPersonsSharingAnAddressOrAnId(t *testing.T) {
	x := NewIndex()
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	h := logx.HashEmail("shared@example.com")
	for i, sc := range []string{"sc-1", "sc-2", "sc-3"} {
		x.Apply(ledger.Change{Key: optout.Key("acme", sc, ""), Entry: entry(sc, "", "shared@example.com", i != 1, at)})
	}
	x.Apply(ledger.Change{Key: optout.Key("beta", "sc-9", ""), Entry: entry("sc-9", "", "shared@example.com", true, at)})
	scs := func() (out []string) {
		for _, r := range x.Lookup("acme", ByEmail, h) {
			out = append(out, r.SalesConnectID)
		}
		slices.Sort(out)
		return out
	}
	if got := scs(); !slices.Equal(got, []string{"sc-1", "sc-2", "sc-3"}) {
		t.Fatalf("by the shared address: %v", got)
	}
	x.Apply(ledger.Change{Key: optout.Key("acme", "sc-2", ""), Deleted: true})
	if got := scs(); !slices.Equal(got, []string{"sc-1", "sc-3"}) {
		t.Fatalf("after the middle one left: %v", got)
	}
	// Reused record numbers carry nothing of their former person.
	x.Apply(ledger.Change{Key: optout.Key("acme", "sc-4", ""), Entry: entry("sc-4", "", "other@example.com", false, time.Time{})})
	if r := x.Lookup("acme", BySalesConnectID, "sc-4"); len(r) != 1 || r[0].Suppressed || !r[0].Since.IsZero() || r[0].Reason != "" {
		t.Errorf("a new person in a freed record: %+v", r)
	}
	if got := scs(); !slices.Equal(got, []string{"sc-1", "sc-3"}) {
		t.Fatalf("after a new person: %v", got)
	}
	lead, contact := "00Q000000000001EAA", "003000000000001AAA"
	conv := entry("sc-5", contact, "", true, at)
	conv.ConvertedFrom = []string{lead}
	x.Apply(ledger.Change{Key: optout.Key("acme", "sc-5", ""), Entry: conv})
	for _, id := range []string{lead, contact} {
		if r := x.Lookup("acme", BySalesforceID, id); len(r) != 1 || r[0].SalesConnectID != "sc-5" || r[0].SalesforceID != contact {
			t.Errorf("by %s: %+v, want the converted Contact", id, r)
		}
	}
	conv.ConvertedFrom = nil
	x.Apply(ledger.Change{Key: optout.Key("acme", "sc-5", ""), Entry: conv})
	if r := x.Lookup("acme", BySalesforceID, lead); len(r) != 0 {
		t.Errorf("the Lead's id no longer named still matches: %+v", r)
	}
	if x.Size() != 5 || len(x.Lookup("beta", ByEmail, h)) != 1 {
		t.Errorf("size %d, beta %d", x.Size(), len(x.Lookup("beta", ByEmail, h)))
	}
}
