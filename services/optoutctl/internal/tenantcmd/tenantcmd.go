// Package tenantcmd is "optoutctl tenant": list tenants, show one with its
// health and a live Salesforce check, check prerequisites, change settings.
package tenantcmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/domain/compliance"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Command is the "tenant" group.
func Command(inv *cli.Invocation) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "list tenants, show one's health, check its Salesforce setup, change its settings",
	}
	cmd.AddCommand(listCmd(inv), showCmd(inv), checkCmd(inv), setCmd(inv))
	return cmd
}

func listCmd(inv *cli.Invocation) *cobra.Command {
	return &cobra.Command{
		Use:               "list [flags]",
		Short:             "every tenant with settings, events, dead letters or a recorded health",
		Args:              cli.ExactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := conn.Open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			sums, err := c.Inspector(inv).List(ctx)
			if err != nil {
				return conn.Wrap(err, "list tenants")
			}
			t := &cli.Table{
				Header: []string{"TENANT", "SETTINGS", "SYNC", "FIELD", "WRITES TO", "SCHEDULE", "POLICY", "STATE", "BACKLOG", "DLQ"},
				Empty:  "No tenants yet: none has settings, events or dead letters.",
			}
			for _, s := range sums {
				t.Rows = append(t.Rows, []string{
					s.Tenant, storedWord(s.Stored), onOff(s.Settings.SyncEnabled), tenantstatus.FieldFlag(s.Settings.Field), s.TargetField,
					s.Settings.ScheduleTime + " " + s.Settings.ScheduleZone, s.Settings.ConflictPolicy, mode(s.Health),
					strconv.FormatUint(s.Backlog, 10), strconv.FormatUint(s.DeadLetters, 10),
				})
			}
			if sums == nil {
				sums = []tenantstatus.Summary{}
			}
			return inv.Print(t, sums)
		},
	}
}

func showCmd(inv *cli.Invocation) *cobra.Command {
	var noCheck, noLedger bool
	cmd := &cobra.Command{
		Use:   "show <tenant> [--no-check] [--no-ledger]",
		Short: "a tenant's settings, health, backlog, oldest unpushed opt-out and live Salesforce check",
		Long: `The live check asks Salesforce for a token and describes Contact and Lead
(three API calls); --no-check skips it. The ledger scan reads every person of
the tenant to count parked and pending opt-outs; --no-ledger skips it.`,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := inspect(ctx, inv, args[0], tenantstatus.Options{CheckSalesforce: !noCheck, ScanLedger: !noLedger})
			if err != nil {
				return err
			}
			if inv.Output != cli.FormatTable {
				return inv.Print(nil, st)
			}
			return writeStatus(inv.Stdout, st)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&noCheck, "no-check", false, "skip the live Salesforce check")
	fs.BoolVar(&noLedger, "no-ledger", false, "skip the ledger scan")
	return cmd
}

func checkCmd(inv *cli.Invocation) *cobra.Command {
	return &cobra.Command{
		Use:   "check <tenant>",
		Short: "live Salesforce prerequisite check; exit code 4 when one fails",
		Long: `Checks the tenant's credentials, gets a token, and describes Contact and Lead
to see that the opt-out field in use is present, a checkbox and writable.
Exits 0 when ready, 4 when a prerequisite fails (each with what to do).`,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := inspect(ctx, inv, args[0], tenantstatus.Options{CheckSalesforce: true})
			if err != nil {
				return err
			}
			if inv.Output != cli.FormatTable {
				if err := inv.Print(nil, st.Salesforce); err != nil {
					return err
				}
			} else if err := writeCheck(inv.Stdout, st); err != nil {
				return err
			}
			if !st.Salesforce.Ready {
				return cli.Prereqf("tenant %s: Salesforce is not ready for %s; fix the problems listed above, then run 'optoutctl tenant check %s' again",
					st.Tenant, st.TargetField, st.Tenant)
			}
			return nil
		},
	}
}

// inspect opens a connection and reads a known tenant's status.
func inspect(ctx context.Context, inv *cli.Invocation, t string, opt tenantstatus.Options) (*tenantstatus.Status, error) {
	if !event.ValidTenant(t) {
		return nil, cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
	}
	c, err := conn.Open(ctx, inv)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := c.Inspector(inv).Inspect(ctx, t, opt)
	if err != nil {
		return nil, conn.Wrap(err, "tenant "+t)
	}
	if !st.Known {
		return nil, cli.NotFoundf("tenant %s not found: it has no settings, events, dead letters or history; check the name, or configure it with 'optoutctl tenant set %s --sync=true'", t, t)
	}
	return st, nil
}

func writeStatus(w io.Writer, st *tenantstatus.Status) error {
	s := st.Settings
	var kv cli.KV
	kv.Add("Tenant", st.Tenant)
	if st.Stored {
		kv.Add("Settings", fmt.Sprintf("stored (revision %d)", st.Revision))
	} else {
		kv.Add("Settings", "defaults (never configured)")
	}
	if s.SyncEnabled {
		kv.Add("Sync", fmt.Sprintf("on: nightly at %s %s", s.ScheduleTime, s.ScheduleZone))
	} else {
		kv.Add("Sync", fmt.Sprintf("off (when on: nightly at %s %s)", s.ScheduleTime, s.ScheduleZone))
	}
	kv.Add("Conflict policy", s.ConflictPolicy)
	kv.Add("Field", fmt.Sprintf("%s (%s)", tenantstatus.FieldFlag(s.Field), fieldName(s)))
	writes := st.TargetField
	if s.Field == tenant.SalesOptOut && !s.SyncEnabled {
		writes += " (sync is off, so the standard field)"
	}
	kv.Add("Writes to", writes)
	kv.Add("Pusher", tenantstatus.HealthText(st.Health))
	b := st.Backlog
	backlog := fmt.Sprintf("%d %s", b.Total(), plural(b.Total(), "event", "events"))
	if b.ConsumerExists {
		backlog += fmt.Sprintf(": %d waiting, %d in flight", b.Waiting, b.InFlight)
	} else if b.Total() > 0 {
		backlog += ": no pusher has run yet"
	}
	kv.Add("Backlog", backlog)
	if w := st.OldestUnpushed; w != nil {
		kv.Add("Oldest unpushed", fmt.Sprintf("%s, %s ago: %s", tenantstatus.FormatTime(w.Since), tenantstatus.FormatAge(w.Age()), waitingText(w)))
	} else {
		kv.Add("Oldest unpushed", "none: every opt-out is in Salesforce")
	}
	if c := st.Compliance; c != nil {
		kv.Add("Compliance", complianceText(c))
	}
	if l := st.Ledger; l != nil {
		people := fmt.Sprintf("%d in the ledger: %d opted out, %d parked without a Salesforce id, %d pending", l.People, l.OptedOut, l.Parked, l.Pending)
		if len(l.Unreadable) > 0 {
			people += fmt.Sprintf("; %d unreadable entries (%s)", len(l.Unreadable), strings.Join(l.Unreadable, ", "))
		}
		kv.Add("People", people)
	}
	dlq := strconv.FormatUint(st.DeadLetters, 10)
	if st.DeadLetters > 0 {
		dlq += " (optoutctl dlq list " + st.Tenant + ")"
	}
	kv.Add("Dead letters", dlq)
	if err := kv.Write(w); err != nil {
		return err
	}
	if st.Salesforce != nil {
		fmt.Fprintln(w)
		return writeCheck(w, st)
	}
	return nil
}

// complianceText is the compliance clock in one line: the oldest unhonoured
// opt-out's wait against 48 hours and 10 business days.
func complianceText(c *compliance.Clock) string {
	if c.Unhonoured == 0 {
		return "0: every opt-out is honoured in Salesforce"
	}
	due := func(name string, at time.Time, overdue bool) string {
		if overdue {
			return fmt.Sprintf("%s OVERDUE since %s", name, tenantstatus.FormatTime(at))
		}
		return fmt.Sprintf("%s due %s (in %s)", name, tenantstatus.FormatTime(at), tenantstatus.FormatAge(at.Sub(c.At)))
	}
	return fmt.Sprintf("%d %s waiting, the oldest %s (%.1f business days, %s); %s; %s",
		c.Unhonoured, plural(uint64(c.Unhonoured), "opt-out", "opt-outs"), tenantstatus.FormatAge(c.Age()), c.BusinessDays, c.Key,
		due("48 h", c.MailboxDeadline, c.MailboxOverdue()), due("10 business days", c.BusinessDaysDeadline, c.BusinessDaysOverdue()))
}

func writeCheck(w io.Writer, st *tenantstatus.Status) error {
	c := st.Salesforce
	verdict := "READY"
	if !c.Ready {
		verdict = "NOT READY: opt-outs wait until the problems below are fixed; none is lost"
	}
	fmt.Fprintf(w, "Salesforce prerequisites (checked %s): %s\n", tenantstatus.FormatTime(c.CheckedAt), verdict)
	var kv cli.KV
	kv.Add("  Credentials", result(c.Credentials))
	kv.Add("  Token", result(c.Token))
	for _, f := range c.Fields {
		line := f.Field + ": "
		if !f.Checked {
			line += "not checked"
		} else {
			parts := make([]string, len(f.Objects))
			for i, o := range f.Objects {
				parts[i] = o.Object + " " + tenantstatus.ObjectText(o)
			}
			line += strings.Join(parts, ", ")
		}
		switch {
		case f.InUse:
			line += " [in use]"
		case f.Chosen:
			line += " [chosen; used when sync is on]"
		}
		kv.Add("  "+tenantstatus.FieldLabel(f.Option), line)
	}
	if a := c.Allowance; a != nil {
		kv.Add("  API allowance", fmt.Sprintf("%d of %d requests left today", a.Remaining, a.Max))
	} else {
		kv.Add("  API allowance", "not known")
	}
	if err := kv.Write(w); err != nil {
		return err
	}
	if len(c.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, p := range c.Problems {
			fmt.Fprintf(w, "  - %s\n    Fix: %s\n", p.What, p.Fix)
		}
	}
	for _, f := range c.Fields {
		if !f.InUse && len(f.Problems) > 0 {
			fmt.Fprintf(w, "\nBefore choosing %s:\n", tenantstatus.FieldFlag(f.Option))
			for _, p := range f.Problems {
				fmt.Fprintf(w, "  - %s\n    Fix: %s\n", p.What, p.Fix)
			}
		}
	}
	return nil
}

func result(r tenantstatus.Result) string {
	switch {
	case !r.Checked:
		return "not checked"
	case r.OK:
		return "ok"
	}
	return "FAILED: " + r.Detail
}

func waitingText(w *tenantstatus.Waiting) string {
	switch w.Where {
	case tenantstatus.WaitingInBacklog:
		s := "an event waits for the pusher"
		if w.EventID != "" {
			s = "event " + w.EventID + " waits for the pusher"
		}
		return fmt.Sprintf("%s (events sequence %d)", s, w.Seq)
	case tenantstatus.WaitingParked:
		return fmt.Sprintf("opt-out %s is parked without a Salesforce id (%s)", w.EventID, w.Key)
	}
	return fmt.Sprintf("opt-out %s is not confirmed by Salesforce yet (%s)", w.EventID, w.Key)
}

func fieldName(s tenant.Settings) string {
	if s.Field == tenant.SalesOptOut {
		return s.CustomField
	}
	return tenant.StandardField
}

func storedWord(stored bool) string {
	if stored {
		return "stored"
	}
	return "defaults"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func mode(h *tenant.Health) string {
	if h == nil || h.Mode == "" {
		return string(tenant.ModeHealthy)
	}
	return string(h.Mode)
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
