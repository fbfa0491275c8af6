package root_test

import (
	encsv "encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

func at(d time.Duration) string { return testkit.T0.Add(d).Format(time.RFC3339) }

// TestPublishAndPersonHistory publishes through optoutctl, lets a real
// pusher apply the events, then reads the person's history and the tenant's
// audit trail back.
func TestPublishAndPersonHistory(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartPusher()
	contact := s.Seed("acme", "Contact", "pat@example.com")
	entry := func(sc string) optout.Entry {
		it, err := s.Ledger.Get(s.Ctx, optout.Key("acme", sc, ""))
		e := it.Entry
		if err != nil {
			return optout.Entry{}
		}
		return e
	}

	pub := s.Run("publish", "acme", "--sc", "sc-1", "--sf", contact, "--email", "pat@example.com", "--source", "email-link",
		"--reason", "clicked unsubscribe", "--occurred-at", at(-2*time.Hour), "--event-id", "evt-1").Expect(t, 0).Golden(t, "publish")
	s.Eventually("sc-1 confirmed in Salesforce", func() bool {
		r, _ := s.Sandbox.Org("acme").Get(contact)
		return r.HasOptedOutOfEmail && entry("sc-1").State == optout.StateSynced
	})
	// The printed trace id is the trace the pusher recorded: one trace from
	// publisher to Salesforce.
	if tid := entry("sc-1").TraceID; tid == "" || !strings.Contains(pub.Stdout, "Trace id   "+tid+"\n") {
		t.Errorf("publish printed:\n%s\nbut the ledger recorded trace %q", pub.Stdout, tid)
	}
	// An older resubscribe must not undo the opt-out; the history shows why.
	s.Run("publish", "acme", "--sc", "sc-1", "--action", "resubscribe", "--source", "sales-user", "--reason", "asked to hear from sales again",
		"--occurred-at", at(-3*time.Hour), "--event-id", "evt-2", "--json", "-o", "json").Expect(t, 0).Golden(t, "publish_json")
	s.Eventually("evt-2 applied", func() bool { e := entry("sc-1"); return e.Seen("evt-2") })

	// From a file: no Salesforce id, so the opt-out is parked.
	s.Run("publish", "--file", "testdata/parked_event.json").Expect(t, 0).Golden(t, "publish_file")
	s.Eventually("sc-2 parked", func() bool { return entry("sc-2").State == optout.StateParked })
	s.Run("publish", "--file", "testdata/parked_event.json").Expect(t, 0).Golden(t, "publish_duplicate")
	s.RunStdin(`{"eventId":"evt-x","tenantId":"acme","person":{"salesforceId":"003000000000001AAB"},"action":"UNSUBSCRIBE","occurredAt":"2025-06-01T11:00:00Z"}`,
		"publish", "--file", "-").Expect(t, 2).Golden(t, "publish_invalid")
	s.Run("publish", "acme", "--sc", "sc-3", "--action", "maybe").Expect(t, 2).Golden(t, "publish_bad_action")
	s.Run("publish", "globex", "--file", "testdata/parked_event.json").Expect(t, 2).Golden(t, "publish_tenant_mismatch")

	s.Run("person", "show", "acme", "sc-1").Expect(t, 0).Golden(t, "person_show")
	// The same person found by their Salesforce id (15 characters work too).
	bySF := s.Run("person", "show", "acme", contact[:15]).Expect(t, 0)
	if !strings.Contains(bySF.Stdout, "Ledger entry acme.sc.c2MtMQ") {
		t.Errorf("lookup by Salesforce id found:\n%s", bySF.Stdout)
	}
	// And by their email address, matched through the keyed hash, which is
	// all the output shows of it.
	byEmail := s.Run("person", "show", "acme", " PAT@example.com").Expect(t, 0)
	if !strings.Contains(byEmail.Stdout, "Ledger entry acme.sc.c2MtMQ") || !strings.Contains(byEmail.Stdout, "Person with email email:") ||
		strings.Contains(strings.ToLower(byEmail.Stdout), "pat@example.com") {
		t.Errorf("lookup by email found:\n%s", byEmail.Stdout)
	}
	js := s.Run("person", "show", "acme", "sc-1", "-o", "json").Expect(t, 0).Golden(t, "person_show_json")
	var parsed struct {
		People []struct {
			History []ledger.AuditRecord `json:"history"`
		} `json:"people"`
	}
	if err := json.Unmarshal([]byte(js.Stdout), &parsed); err != nil || len(parsed.People) != 1 || len(parsed.People[0].History) < 3 {
		t.Fatalf("person show -o json: %v\n%s", err, js.Stdout)
	}
	s.Run("person", "show", "acme", "sc-2").Expect(t, 0).Golden(t, "person_show_parked")
	s.Run("person", "show", "acme", "sc-404").Expect(t, 3).Golden(t, "person_show_not_found")
	s.Run("person", "show", "acme", "003000000000001", "--by", "sf").Expect(t, 3)
	s.Run("person", "show", "acme", "sc-1", "--by", "sf").Expect(t, 2).Golden(t, "person_show_not_sf")

	csv := s.Run("person", "export", "acme").Expect(t, 0).Golden(t, "person_export_csv")
	json := s.Run("person", "export", "acme", "-o", "json").Expect(t, 0).Golden(t, "person_export_json")
	// At a terminal a row count runs on stderr while the rows are written,
	// and is cleared at the end; the rows are the same. Never with -o json.
	s.Terminal = true
	if r := s.Run("person", "export", "acme").Expect(t, 0); r.Stdout != csv.Stdout || !strings.Contains(r.Stderr, "exporting acme") ||
		!strings.Contains(r.Stderr, "rows") || !strings.HasSuffix(r.Stderr, "\r") {
		t.Errorf("export at a terminal:\nstdout %q\nstderr %q", r.Stdout, r.Stderr)
	}
	if r := s.Run("person", "export", "acme", "-o", "json").Expect(t, 0); r.Stdout != json.Stdout || r.Stderr != "" {
		t.Errorf("export -o json at a terminal:\nstderr %q", r.Stderr)
	}
	s.Terminal = false
	s.Run("person", "export", "acme", "--current").Expect(t, 0).Golden(t, "person_export_current")
	s.Run("person", "export", "acme", "-o", "table").Expect(t, 2)
	s.Run("person", "export", "empty", "-o", "json").Expect(t, 0).Golden(t, "person_export_empty")

	// The compliance record: evt-1 honoured by the push, sc-2's opt-out
	// parked (no Salesforce id) still pending.
	comp := s.Run("person", "compliance", "acme").Expect(t, 0)
	rows, err := encsv.NewReader(strings.NewReader(comp.Stdout)).ReadAll()
	if err != nil || len(rows) < 3 || rows[0][len(rows[0])-1] != "seconds_to_honour" {
		t.Fatalf("person compliance: %v\n%s", err, comp.Stdout)
	}
	status := map[string]string{}
	for _, r := range rows[1:] {
		status[r[1]] = r[10] + " / " + r[11]
	}
	if status["evt-1"] != "honoured / pushed by optout-sync" {
		t.Errorf("evt-1 in the compliance record: %q\n%s", status["evt-1"], comp.Stdout)
	}
	if js := s.Run("person", "compliance", "acme", "--to", "2020-01-01", "-o", "json").Expect(t, 0); strings.TrimSpace(js.Stdout) != "[]" {
		t.Errorf("a range before every opt-out: %s", js.Stdout)
	}
	if bad := s.Run("person", "compliance", "acme", "--from", "yesterday").Expect(t, 2); !strings.Contains(bad.Stderr, `--from "yesterday": want a date as YYYY-MM-DD`) {
		t.Errorf("bad date: %s", bad.Stderr)
	}
}

// TestPersonShowFollowsAMerge: an opt-out that carried only the Salesforce
// id made an entry under that id; the first event that links both ids
// merges it into the person's entry and retires it. person show, by either
// id, shows the live entry first and the retired one with its history.
func TestPersonShowFollowsAMerge(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	contact := s.Seed("acme", "Contact", "kim@example.com")
	ingest := func(in optout.EventInput) {
		t.Helper()
		if _, err := s.Ledger.Writer("acme", "HasOptedOutOfEmail").Ingest(s.Ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	ingest(optout.EventInput{ID: "evt-m1", Action: optout.OptOut, OccurredAt: testkit.T0.Add(-2 * time.Hour), Source: "EMAIL_LINK", SalesforceID: contact, ObjectType: "Contact"})
	ingest(optout.EventInput{ID: "evt-m2", Action: optout.Resubscribe, OccurredAt: testkit.T0.Add(-3 * time.Hour), Source: "SALES_USER", SalesConnectID: "sc-m", SalesforceID: contact, ObjectType: "Contact"})

	live, retired := optout.Key("acme", "sc-m", ""), optout.Key("acme", "", contact)
	for _, id := range []string{"sc-m", contact} {
		out := s.Run("person", "show", "acme", id).Expect(t, 0).Stdout
		i, j := strings.Index(out, "Ledger entry "+live+" "), strings.Index(out, "Ledger entry "+retired+" ")
		if !strings.Contains(out, ": 2 ledger entries") || i < 0 || j < i {
			t.Fatalf("person show %s: want the live entry, then the retired one:\n%s", id, out)
		}
		for _, want := range []string{"State             RETIRED: merged into " + live, "Merged into       " + live,
			"evt-m1: UNSUBSCRIBE by EMAIL_LINK", "evt-m2: RESUBSCRIBE by SALES_USER", "Opted out         yes, decided 2025-06-01 10:00:00 UTC by event evt-m1"} {
			if !strings.Contains(out, want) {
				t.Errorf("person show %s lacks %q:\n%s", id, want, out)
			}
		}
	}
}
