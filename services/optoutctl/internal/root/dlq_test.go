package root_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/testkit"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// TestDLQCommands makes three real dead letters with the pusher (a deleted
// Salesforce record, a JSON event with an unknown field, bytes that are no
// event at all), then lists, shows, replays and purges them.
func TestDLQCommands(t *testing.T) {
	t.Parallel()
	s := testkit.New(t)
	s.StartPusher()
	dlq := deadletter.DLQ{JS: s.Prov.JS, Topology: s.Topo}
	waitDLQ := func(n uint64) {
		s.Eventually("dead letters", func() bool { c, _ := dlq.Count(s.Ctx, "acme"); return c == n })
	}
	raw := func(data, contentType string) {
		m := nats.NewMsg(s.Topo.EventsSubject("acme"))
		m.Data = []byte(data)
		if contentType != "" {
			m.Header.Set("Content-Type", contentType)
		}
		if _, err := s.Prov.JS.PublishMsg(s.Ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	contact := s.Seed("acme", "Contact", "lee@example.com")
	if err := s.Sandbox.Org("acme").Delete(contact); err != nil {
		t.Fatal(err)
	}
	s.Run("publish", "acme", "--sc", "sc-d1", "--sf", contact, "--reason", "unsubscribe link", "--source", "email-link",
		"--occurred-at", at(-time.Hour), "--event-id", "evt-d1").Expect(t, 0)
	waitDLQ(1)
	raw(`{"eventId":"evt-d2","tenantId":"acme","person":{"salesConnectId":"sc-d2"},"action":"UNSUBSCRIBE","occurredAt":"2025-06-01T11:00:00Z","colour":"red"}`, "application/json")
	waitDLQ(2)
	raw("\x00\x01not an event", "")
	waitDLQ(3)

	s.Run("dlq", "list").Expect(t, 0).Golden(t, "dlq_list")
	s.Run("dlq", "list", "acme", "--code", "undecodable", "--limit", "1").Expect(t, 0).Golden(t, "dlq_list_filtered")
	s.Run("dlq", "list", "acme", "-o", "json").Expect(t, 0).Golden(t, "dlq_list_json")
	s.Run("dlq", "list", "globex").Expect(t, 0).Golden(t, "dlq_list_empty")
	s.Run("dlq", "show", "acme", "1").Expect(t, 0).Golden(t, "dlq_show")
	s.Run("dlq", "show", "acme", "2", "-o", "json").Expect(t, 0).Golden(t, "dlq_show_json")
	s.Run("dlq", "show", "acme", "3").Expect(t, 0).Golden(t, "dlq_show_garbage")
	s.Run("dlq", "show", "globex", "1").Expect(t, 3).Golden(t, "dlq_show_other_tenant")
	s.Run("dlq", "show", "acme", "x").Expect(t, 2)
	// The shell completes a tenant's dead letters by sequence, with code
	// and reason, leaving out those already typed.
	seqs := func(args ...string) string {
		var got []string
		for _, l := range strings.Split(s.Run(append([]string{"__complete"}, args...)...).Expect(t, 0).Stdout, "\n") {
			seq, desc, _ := strings.Cut(l, "\t")
			if desc != "" {
				seq += " " + strings.Fields(desc)[0]
			}
			got = append(got, seq)
		}
		return strings.Join(got, ", ")
	}
	if got := seqs("dlq", "show", "acme", ""); got != "1 ENTITY_IS_DELETED:, 2 undecodable:, 3 undecodable:, :4, " {
		t.Errorf("dlq show acme <TAB>: %s", got)
	}
	if got := seqs("dlq", "replay", "acme", "1", ""); got != "2 undecodable:, 3 undecodable:, :4, " {
		t.Errorf("dlq replay acme 1 <TAB>: %s", got)
	}
	if got := seqs("dlq", "show", "acme", "1", ""); got != ":4, " {
		t.Errorf("dlq show acme 1 <TAB>: %s", got)
	}

	// The admin restores the record; the replay then goes through.
	if err := s.Sandbox.Org("acme").Undelete(contact); err != nil {
		t.Fatal(err)
	}
	s.Run("dlq", "replay", "acme", "1").Expect(t, 0).Golden(t, "dlq_replay")
	s.Eventually("replayed opt-out in Salesforce", func() bool {
		r, _ := s.Sandbox.Org("acme").Get(contact)
		it, _ := s.Ledger.Get(s.Ctx, optout.Key("acme", "sc-d1", ""))
		e := it.Entry
		return r.HasOptedOutOfEmail && e.State == optout.StateSynced
	})
	s.Run("person", "show", "acme", "sc-d1").Expect(t, 0).Golden(t, "dlq_replayed_person")
	invalid := s.Run("dlq", "replay", "acme", "2").Expect(t, 4).Golden(t, "dlq_replay_invalid")
	// At a terminal a bar on stderr follows the replays and is cleared
	// before the table; stdout and the error line are the same. Never with
	// -o json.
	s.Terminal = true
	bar := s.Run("dlq", "replay", "acme", "2").Expect(t, 4)
	if bar.Stdout != invalid.Stdout || !strings.Contains(bar.Stderr, "replaying dead letters of acme") || !strings.Contains(bar.Stderr, "(0/1, ") ||
		!strings.HasSuffix(bar.Stderr, "\r"+invalid.Stderr) {
		t.Errorf("dlq replay at a terminal:\nstdout %q\nstderr %q", bar.Stdout, bar.Stderr)
	}
	if r := s.Run("dlq", "replay", "acme", "2", "-o", "json").Expect(t, 4); strings.Contains(r.Stderr, "replaying") {
		t.Errorf("a bar with -o json: %q", r.Stderr)
	}
	s.Terminal = false
	s.Run("dlq", "replay", "acme", "1").Expect(t, 3).Golden(t, "dlq_replay_gone")
	s.Run("dlq", "replay", "acme").Expect(t, 2)

	s.Run("dlq", "purge", "acme", "--all").Expect(t, 2).Golden(t, "dlq_purge_unconfirmed")
	s.Run("dlq", "purge", "acme", "2").Expect(t, 0).Golden(t, "dlq_purge_one")
	s.Run("dlq", "purge", "acme", "--all", "--yes", "-o", "json").Expect(t, 0).Golden(t, "dlq_purge_all")
	s.Run("dlq", "list", "acme").Expect(t, 0).Golden(t, "dlq_list_after_purge")
}
