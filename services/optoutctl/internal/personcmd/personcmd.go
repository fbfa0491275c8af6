// Package personcmd is "optoutctl person": one person's ledger entry and the
// full history of their opt-out changes (who, when, source, reason, pushed
// when, trace id), and the export of a whole tenant's audit trail: what an
// admin hands to a compliance reviewer.
//
// The output may show data about a person to the authorised operator who
// asked; nothing here is logged.
package personcmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
)

// Command is the "person" group.
func Command(inv *cli.Invocation) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "person",
		Short: "a person's opt-out state and full history; export a tenant's audit trail and compliance record",
	}
	cmd.AddCommand(showCmd(inv), exportCmd(inv), complianceCmd(inv))
	return cmd
}

func showCmd(inv *cli.Invocation) *cobra.Command {
	by := "auto"
	cmd := &cobra.Command{
		Use:   "show <tenant> <sales-connect-id|salesforce-id|email> [--by auto|sc|sf|email]",
		Short: "a person's ledger entry and every change to it",
		Long: `A 15- or 18-character Contact (003…) or Lead (00Q…) id is read as a Salesforce
id, an address with an @ as an email (matched through its keyed hash: the
install's OPTOUT_EMAIL_HASH_KEY_FILE must be set), anything else as a Sales
Connect id; --by sc, sf or email decides for ids that could be either. Every ledger entry of the person is shown, the live one
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
			if by != proof.ByAuto && by != proof.BySC && by != proof.BySF && by != proof.ByEmail {
				return cli.Usagef("--by %q: want auto, sc, sf or email", by)
			}
			if err := conn.UseEmailHashKey(inv); err != nil {
				return err
			}
			q, err := proof.ParseQuery(t, id, by)
			if err != nil {
				if by == proof.BySF || (by == proof.ByAuto && !strings.Contains(id, "@")) {
					return cli.Usagef("%q is not a Salesforce id: %v", id, err)
				}
				return cli.Usagef("%q cannot be looked up by email: %v", id, err)
			}
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			people, err := proof.Find(ctx, proof.Source{Ledger: c.Ledger, JS: c.JS, Topology: c.Topology}, q)
			if err != nil {
				return conn.Wrap(err, "person "+id)
			}
			what := "Sales Connect id"
			switch {
			case q.SF != "":
				what, id = "Salesforce id", q.SF
			case q.Email != "":
				what, id = "email", q.Email // the address itself is never printed back
			}
			if len(people) == 0 {
				return cli.NotFoundf("tenant %s has no person with %s %s: neither the ledger nor the audit trail knows them; check the id, or use --by sc|sf", t, what, id)
			}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, struct {
					Tenant string         `json:"tenant"`
					Query  string         `json:"query"`
					By     string         `json:"by"`
					People []proof.Person `json:"people"`
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
	fs.StringVar(&by, "by", "auto", "how to read the id: auto, sc (Sales Connect), sf (Salesforce) or email")
	cli.CompleteFlag(cmd, "by", "auto", "sc", "sf", "email")
	return cmd
}

func writePerson(w io.Writer, p proof.Person, said map[string]*optout.Event) error {
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
	events := proof.AppliedEvents(p.History)
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
func eventText(id string, last *optout.Event, events map[string]proof.EventInfo) string {
	ev, ok := events[id]
	if last != nil && last.ID == id {
		ev, ok = proof.EventInfo{Action: last.Action, Source: last.Source, Reason: last.Reason, OccurredAt: last.OccurredAt}, true
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
			format, err := exportFormat(inv, "person export")
			if err != nil {
				return err
			}
			return export(ctx, inv, t, format, proof.RowHeader, func(ctx context.Context, src proof.Source, write func(proof.Row) error) error {
				if current {
					return proof.Current(ctx, src, t, write)
				}
				return proof.Trail(ctx, src, t, write)
			})
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&current, "current", false, "export each person's current entry instead of every change")
	return cmd
}

func complianceCmd(inv *cli.Invocation) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "compliance <tenant> [--from YYYY-MM-DD] [--to YYYY-MM-DD] [-o csv|json]",
		Short: "each opt-out received in a date range and how long Salesforce took to honour it, as CSV or JSON",
		Long: `Writes one row per opt-out the tenant received between --from and --to (UTC
dates, both included; either may be left out): when the person asked, when it
was received, when Salesforce confirmed the opt-out field, how (pushed by
optout-sync, written by the nightly reconcile, already opted out in
Salesforce, opted out in Salesforce itself), its status (honoured, pending,
failed, superseded by a later resubscribe) and the seconds to honour it.
Settled rows come first, then the pending and failed ones. The same export
as the admin page's "Compliance export".`,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			var bounds [2]time.Time
			for i, v := range [...]struct{ flag, value string }{{"--from", from}, {"--to", to}} {
				if v.value == "" {
					continue
				}
				d, err := time.Parse(time.DateOnly, v.value)
				if err != nil {
					return cli.Usagef("%s %q: want a date as YYYY-MM-DD", v.flag, v.value)
				}
				bounds[i] = d
			}
			if !bounds[1].IsZero() {
				bounds[1] = bounds[1].AddDate(0, 0, 1) // --to is included
			}
			format, err := exportFormat(inv, "person compliance")
			if err != nil {
				return err
			}
			return export(cmd.Context(), inv, t, format, proof.HonourHeader, func(ctx context.Context, src proof.Source, write func(proof.Honour) error) error {
				return proof.Compliance(ctx, src, t, bounds[0], bounds[1], write)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "the first day (UTC, YYYY-MM-DD) of opt-outs received")
	fs.StringVar(&to, "to", "", "the last day (UTC, YYYY-MM-DD, included)")
	return cmd
}

// exportFormat is an export's format: CSV unless -o says json.
func exportFormat(inv *cli.Invocation, what string) (string, error) {
	if !inv.OutputSet {
		return cli.FormatCSV, nil
	}
	if inv.Output == cli.FormatTable {
		return "", cli.Usagef("%s writes csv or json; pass -o csv or -o json", what)
	}
	return inv.Output, nil
}

// export streams rows of tenant t as CSV or JSON, with a progress bar on a
// terminal (the count is not known ahead: a row count and rate; each row is
// flushed whole above the bar).
func export[R interface{ CSV() []string }](ctx context.Context, inv *cli.Invocation, t, format string, header []string,
	read func(context.Context, proof.Source, func(R) error) error) error {
	c, err := conn.Open(ctx, inv)
	if err != nil {
		return err
	}
	defer c.Close()
	prog := inv.Progress(-1, "exporting "+t, "rows")
	defer prog.Done()
	sink, err := proof.NewSink[R](prog.Above(inv.Stdout), format, header)
	if err != nil {
		return err
	}
	write := sink.Write
	if prog != nil {
		write = func(r R) error {
			defer prog.Add(1)
			if err := sink.Write(r); err != nil {
				return err
			}
			return sink.Flush()
		}
	}
	if err := read(ctx, proof.Source{Ledger: c.Ledger, JS: c.JS, Topology: c.Topology}, write); err != nil {
		return conn.Wrap(err, "export "+t)
	}
	return sink.Close()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
