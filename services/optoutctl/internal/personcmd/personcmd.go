// Package personcmd is "optoutctl person": one person's ledger entry and the
// full history of their opt-out changes (who, when, source, reason, pushed
// when, trace id), and the export of a whole tenant's audit trail: what an
// admin hands to a compliance reviewer.
//
// The output may show data about a person to the authorised operator who
// asked; nothing here is logged.
package personcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// Command is the "person" group.
func Command(inv *cli.Invocation) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "person",
		Short: "a person's opt-out state and full history; export a tenant's audit trail",
	}
	cmd.AddCommand(showCmd(inv), exportCmd(inv))
	return cmd
}

func showCmd(inv *cli.Invocation) *cobra.Command {
	by := "auto"
	cmd := &cobra.Command{
		Use:   "show <tenant> <sales-connect-id|salesforce-id> [--by auto|sc|sf]",
		Short: "a person's ledger entry and every change to it",
		Long: `A 15- or 18-character Contact (003…) or Lead (00Q…) id is read as a Salesforce
id, anything else as a Sales Connect id; --by sc or --by sf decides for ids
that could be either. Every ledger entry of the person is shown, the live one
first: an entry made when an early event carried only the Salesforce id is
merged into the person's entry and retired, and a converted Lead's person
moves to its Contact. Reads the tenant's whole audit trail.`,
		Args:              cli.ExactArgs("tenant", "id"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, id := args[0], args[1]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			if by != "auto" && by != "sc" && by != "sf" {
				return cli.Usagef("--by %q: want auto, sc or sf", by)
			}
			q, err := parseQuery(t, id, by)
			if err != nil {
				return cli.Usagef("%q is not a Salesforce id: %v", id, err)
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			people, err := find(ctx, c.Ledger, c.JS, c.Topology, q)
			if err != nil {
				return conn.Wrap(err, "person "+id)
			}
			ids := map[string]bool{}
			for _, p := range people {
				for _, id := range appliedEvents(p.History) {
					if id != "" {
						ids[id] = true
					}
				}
			}
			events, err := lookupEvents(ctx, c.JS, c.Topology, t, ids)
			if err != nil {
				return conn.Wrap(err, "events of person "+id)
			}
			for i := range people {
				people[i].Events = map[string]eventInfo{}
				for _, id := range appliedEvents(people[i].History) {
					if ev, ok := events[id]; ok {
						people[i].Events[id] = ev
					}
				}
			}
			what := "Sales Connect id"
			if q.sf != "" {
				what, id = "Salesforce id", q.sf
			}
			if len(people) == 0 {
				return cli.NotFoundf("tenant %s has no person with %s %s: neither the ledger nor the audit trail knows them; check the id, or use --by sc|sf", t, what, id)
			}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, struct {
					Tenant string   `json:"tenant"`
					Query  string   `json:"query"`
					By     string   `json:"by"`
					People []person `json:"people"`
				}{t, id, what, people})
			}
			fmt.Fprintf(inv.Stdout, "Person with %s %s in tenant %s: %d ledger %s\n", what, id, t, len(people), plural(len(people), "entry", "entries"))
			// What each event said, from every entry of the person: a merge
			// brings an event applied under the retired entry's key.
			said := map[string]*optout.Event{}
			for _, p := range people {
				for _, r := range p.History {
					if ev := r.Entry.LastEvent; ev != nil {
						said[ev.ID] = ev
					}
				}
			}
			for _, p := range people {
				fmt.Fprintln(inv.Stdout)
				if err := writePerson(inv.Stdout, p, said); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&by, "by", "auto", "how to read the id: auto, sc (Sales Connect) or sf (Salesforce)")
	cli.CompleteFlag(cmd, "by", "auto", "sc", "sf")
	return cmd
}

func writePerson(w io.Writer, p person, said map[string]*optout.Event) error {
	fmt.Fprintf(w, "Ledger entry %s", p.Key)
	if p.Entry == nil {
		fmt.Fprintln(w, " (no longer in the ledger; its history follows)")
	} else {
		fmt.Fprintf(w, " (revision %d)\n", p.Revision)
		e := p.Entry
		var kv cli.KV
		kv.Add("  Sales Connect id", e.SalesConnectID)
		sf := e.SalesforceID
		if sf != "" && e.ObjectType != "" {
			sf += " (" + e.ObjectType + ")"
		}
		kv.Add("  Salesforce id", sf)
		if e.EmailHash != "" {
			kv.Add("  Email", e.EmailHash+" (a hash; the address is not stored)")
		}
		opted := "no"
		if e.OptedOut {
			opted = "yes"
		}
		if !e.DecidedAt.IsZero() {
			opted += fmt.Sprintf(", decided %s by event %s (%s)", tenantstatus.FormatTime(e.DecidedAt), e.DecidedBy, e.Source)
		}
		kv.Add("  Opted out", opted)
		kv.Add("  State", fmt.Sprintf("%s: %s", e.State, e.Reason))
		if e.MergedInto != "" {
			kv.Add("  Merged into", e.MergedInto+" (the person's entry now; shown above or below)")
		}
		if len(e.ConvertedFrom) > 0 {
			kv.Add("  Converted from", strings.Join(e.ConvertedFrom, ", ")+" (Lead)")
		}
		kv.Add("  Salesforce field", fieldText(*e))
		kv.Add("  Trace id", e.TraceID)
		kv.Add("  Last change", tenantstatus.FormatTime(e.ChangedAt))
		if err := kv.Write(w); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\n  History (%d %s, oldest first):\n", len(p.History), plural(len(p.History), "change", "changes"))
	if p.Missing > 0 {
		fmt.Fprintf(w, "  (%d %s of this entry not in the audit trail: aged out of it, or not copied into it yet)\n", p.Missing, plural(int(p.Missing), "change", "changes"))
	}
	events := appliedEvents(p.History)
	for i, r := range p.History {
		e := r.Entry
		fmt.Fprintf(w, "  %s  revision %d (change %d)\n", tenantstatus.FormatTime(r.At), r.Revision, e.Version)
		var kv cli.KV
		if id := events[i]; id != "" {
			last := e.LastEvent
			if last == nil || last.ID != id {
				last = said[id]
			}
			kv.Add("    Event", eventText(id, last, p.Events))
		}
		kv.Add("    Result", fmt.Sprintf("%s; %s: %s", optedText(e.OptedOut), e.State, e.Reason))
		if e.Confirmed != nil {
			kv.Add("    Pushed", fmt.Sprintf("%s = %t confirmed by Salesforce at %s", e.Field, *e.Confirmed, tenantstatus.FormatTime(e.ConfirmedAt)))
		}
		kv.Add("    Trace id", e.TraceID)
		if err := kv.Write(w); err != nil {
			return err
		}
	}
	return nil
}

// eventText says who did what, when and why: from the ledger's record of the
// event when it has one (kept as long as the audit trail), else from the
// events stream while it still holds the event.
func eventText(id string, last *optout.Event, events map[string]eventInfo) string {
	ev, ok := events[id]
	if last != nil && last.ID == id {
		ev, ok = eventInfo{Action: last.Action, Source: last.Source, Reason: last.Reason, OccurredAt: last.OccurredAt}, true
	}
	if !ok {
		return id + " (its details are no longer in the events stream)"
	}
	s := fmt.Sprintf("%s: %s by %s at %s", id, ev.Action, ev.Source, tenantstatus.FormatTime(ev.OccurredAt))
	if ev.Reason != "" {
		s += fmt.Sprintf(", reason %q", ev.Reason)
	}
	return s
}

func optedText(b bool) string {
	if b {
		return "opted out"
	}
	return "not opted out"
}

func fieldText(e optout.Entry) string {
	if e.Field == "" {
		return ""
	}
	if e.Confirmed == nil {
		return e.Field + ": not confirmed by Salesforce yet"
	}
	s := fmt.Sprintf("%s = %t, confirmed %s", e.Field, *e.Confirmed, tenantstatus.FormatTime(e.ConfirmedAt))
	if e.SetByUs {
		s += " (set by optout-sync)"
	}
	return s
}

func exportCmd(inv *cli.Invocation) *cobra.Command {
	var current bool
	cmd := &cobra.Command{
		Use:   "export <tenant> [-o csv|json] [--current]",
		Short: "a tenant's whole audit trail (or, with --current, every person's current state) as CSV or JSON",
		Long: `Writes every change to every person of the tenant, oldest first, as CSV (the
default) or a JSON array, streamed so any size fits. --current writes one row
per person instead: their ledger entry now, in storage order. CSV values that
a spreadsheet would run as a formula get a leading apostrophe.`,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			format := inv.Output
			if !inv.OutputSet {
				format = cli.FormatCSV
			}
			if format == cli.FormatTable {
				return cli.Usagef("person export writes csv or json; pass -o csv or -o json")
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			// The count is not known ahead: a row count and rate. The rows
			// go to the same terminal: each is flushed whole, above the bar.
			prog := inv.Progress(-1, "exporting "+t, "rows")
			defer prog.Done()
			sink, err := newSink(prog.Above(inv.Stdout), format)
			if err != nil {
				return err
			}
			if prog != nil {
				sink.counted, sink.flushRows = prog.Add, true
			}
			if current {
				err = c.Ledger.Scan(ctx, t, func(it ledger.ScanItem) error {
					return sink.write(exportRow{Key: it.Key, Revision: it.Revision, Entry: it.Entry, EventID: eventOf(it.Entry)})
				}, nil)
			} else {
				// Changes made just before the export are in it too: wait for
				// the asynchronously copied trail (bounded, as person show does).
				if err := waitAudited(ctx, c.JS, c.Topology); err != nil {
					return conn.Wrap(err, "export "+t)
				}
				last := map[string]string{}
				err = ledger.ReadAudit(ctx, c.JS, c.Topology, t, func(r ledger.AuditRecord) error {
					ev := eventOf(r.Entry)
					row := exportRow{Key: r.Key, Revision: r.Revision, At: r.At, Entry: r.Entry}
					if ev != last[r.Key] {
						row.EventID = ev
					}
					last[r.Key] = ev
					return sink.write(row)
				})
			}
			if err != nil {
				return conn.Wrap(err, "export "+t)
			}
			return sink.close()
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&current, "current", false, "export each person's current entry instead of every change")
	return cmd
}

// exportRow is one exported change (or current entry).
type exportRow struct {
	Key      string       `json:"key"`
	Revision uint64       `json:"revision"`
	At       time.Time    `json:"at,omitzero"`
	EventID  string       `json:"eventId,omitempty"`
	Entry    optout.Entry `json:"entry"`
}

var csvHeader = []string{"tenant", "key", "revision", "changed_at", "event_id", "sales_connect_id", "salesforce_id", "object_type", "email_hash",
	"opted_out", "decided_at", "decided_by", "source", "state", "reason", "field", "confirmed", "confirmed_at", "set_by_us", "trace_id",
	"event_action", "event_source", "event_occurred_at", "event_reason"}

func (r exportRow) csv() []string {
	e := r.Entry
	at := r.At
	if at.IsZero() {
		at = e.ChangedAt
	}
	confirmed := ""
	if e.Confirmed != nil {
		confirmed = strconv.FormatBool(*e.Confirmed)
	}
	row := []string{e.Tenant, r.Key, strconv.FormatUint(r.Revision, 10), rfc(at), r.EventID, e.SalesConnectID, e.SalesforceID, e.ObjectType, e.EmailHash,
		strconv.FormatBool(e.OptedOut), rfc(e.DecidedAt), e.DecidedBy, e.Source, string(e.State), e.Reason, e.Field, confirmed, rfc(e.ConfirmedAt),
		strconv.FormatBool(e.SetByUs), e.TraceID}
	if ev := e.LastEvent; ev != nil {
		row = append(row, ev.Action, ev.Source, rfc(ev.OccurredAt), ev.Reason)
	} else {
		row = append(row, "", "", "", "")
	}
	return row
}

// sink streams rows as CSV or as one JSON array (one row per line).
type sink struct {
	w    io.Writer
	csv  *cli.CSVWriter
	rows int
	// counted is told of each row written (the progress bar); with
	// flushRows each CSV row is written out whole at once.
	counted   func(int)
	flushRows bool
}

func newSink(w io.Writer, format string) (*sink, error) {
	s := &sink{w: w}
	if format == cli.FormatCSV {
		c, err := cli.NewCSV(w, csvHeader)
		if err != nil {
			return nil, err
		}
		s.csv = c
		return s, nil
	}
	_, err := io.WriteString(w, "[")
	return s, err
}

func (s *sink) write(r exportRow) error {
	s.rows++
	if s.counted != nil {
		defer s.counted(1)
	}
	if s.csv != nil {
		if err := s.csv.Write(r.csv()); err != nil || !s.flushRows {
			return err
		}
		return s.csv.Flush()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sep := ",\n"
	if s.rows == 1 {
		sep = "\n"
	}
	_, err = fmt.Fprintf(s.w, "%s  %s", sep, b)
	return err
}

func (s *sink) close() error {
	if s.csv != nil {
		return s.csv.Flush()
	}
	end := "\n]\n"
	if s.rows == 0 {
		end = "]\n"
	}
	_, err := io.WriteString(s.w, end)
	return err
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
