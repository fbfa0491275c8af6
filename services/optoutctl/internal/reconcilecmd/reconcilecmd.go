// Package reconcilecmd is "optoutctl reconcile": start a run (or a dry run)
// of the nightly reconciler now and follow it to its report, show the
// current run's progress and the last report, list past runs.
package reconcilecmd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/services/optoutctl/internal/conn"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// PollInterval is how often a followed run's report and checkpoint are read.
var PollInterval = 250 * time.Millisecond

// Command is the "reconcile" group.
func Command(inv *cli.Invocation) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "nightly reconciler: run or dry-run a tenant now, its progress, past runs",
	}
	cmd.AddCommand(startCmd(inv, "run", false), startCmd(inv, "dry-run", true), statusCmd(inv), historyCmd(inv))
	return cmd
}

const startLong = `Asks the reconciler (any replica) to run the tenant now, then shows its
progress until it ends and prints its report; --detach returns once the run
has started. Ctrl-C stops following, not the run. A run reads only what
changed since the last complete run unless a full scan is due (weekly by
default) or --full asks for one.

Exit codes: 0 succeeded (or started, with --detach); 1 failed or abandoned;
4 stopped by the mass-resubscribe guard or the API budget, or refused
(sync disabled, a run already in progress, no reconciler answering).`

func startCmd(inv *cli.Invocation, name string, dry bool) *cobra.Command {
	var detach, full bool
	short := "run a tenant's reconcile now and follow it to its report"
	if dry {
		short = "compute a tenant's reconcile now without changing anything, and report"
	}
	cmd := &cobra.Command{
		Use:               name + " <tenant> [--detach] [--full]",
		Short:             short,
		Long:              startLong,
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			c, store, err := open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			rep, err := runs.Request(ctx, c.NC, c.Topology, t, runs.ControlRequest{DryRun: dry, Full: full, By: "optoutctl:" + user(inv)})
			if errors.Is(err, nats.ErrNoResponders) {
				return cli.Prereqf("no reconciler answers on %s: start the reconciler (or set OPTOUT_NAMESPACE to its namespace) and retry",
					c.Topology.ControlSubject(runs.ControlVerb, t))
			}
			if err != nil {
				return cli.Failf(err, "%v; check that the reconciler is running and retry", err)
			}
			if !rep.Accepted {
				return refused(rep, dry)
			}
			if detach {
				if inv.Output == cli.FormatJSON {
					return cli.WriteJSON(inv.Stdout, rep)
				}
				fmt.Fprintf(inv.Stdout, "%s %s of tenant %s on replica %s.\nFollow it with 'optoutctl reconcile status %s'.\n",
					startedWord(rep), kind(rep.DryRun), t, rep.Replica, t)
				fmt.Fprintf(inv.Stdout, "Run id: %s\n", rep.RunID)
				return nil
			}
			var prog *progress
			if inv.Output != cli.FormatJSON {
				fmt.Fprintf(inv.Stderr, "%s %s %s of tenant %s on replica %s; following it (Ctrl-C stops following, not the run).\n",
					startedWord(rep), kind(rep.DryRun), rep.RunID, t, rep.Replica)
				prog = newProgress(inv.Stderr, inv.StderrTerminal)
			}
			final, err := follow(ctx, store, t, rep.RunID, prog)
			if err != nil {
				return err
			}
			if err := printReport(inv, final); err != nil {
				return err
			}
			return outcome(final)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&detach, "detach", false, "return once the run has started; follow it with 'reconcile status'")
	fs.BoolVar(&full, "full", false, "compare every record and ledger entry, not only what changed since the last complete run")
	return cmd
}

func startedWord(rep runs.ControlReply) string {
	if rep.Resumed {
		return "Resumed"
	}
	return "Started"
}

func kind(dry bool) string {
	if dry {
		return "dry run"
	}
	return "run"
}

// refused turns a refused control request into an error saying what to do.
func refused(rep runs.ControlReply, dry bool) error {
	t := rep.Tenant
	switch rep.Code {
	case runs.CodeSyncDisabled:
		return cli.Prereqf("tenant %s: Salesforce sync is disabled, so a real run is refused; enable it with 'optoutctl tenant set %s --sync=true', or see what a run would do with 'optoutctl reconcile dry-run %s'", t, t, t)
	case runs.CodeBusy:
		run := ""
		if rep.ActiveRunID != "" {
			run = " (run " + rep.ActiveRunID + ")"
		}
		hint := "wait for it to end ('optoutctl reconcile status " + t + "') and retry"
		if dry {
			hint += "; a real run request ('reconcile run') resumes an unfinished run"
		}
		return cli.Prereqf("tenant %s is busy: a run is in progress or unfinished%s; %s", t, run, hint)
	case runs.CodeBadRequest:
		return cli.Usagef("the reconciler refused the request: %s", rep.Error)
	case runs.CodeUnavailable:
		return cli.Prereqf("the reconciler cannot start runs now (%s); retry in a minute", rep.Error)
	}
	return cli.Prereqf("the reconciler refused the %s of tenant %s: %s %s", kind(dry), t, rep.Code, rep.Error)
}

// outcome maps a finished run to the exit code.
func outcome(r runs.Report) error {
	switch r.Status {
	case runs.StatusSucceeded:
		return nil
	case runs.StatusStoppedGuard:
		return cli.Prereqf("run %s stopped by the mass-resubscribe guard before any write: %s; check the resubscribes in Salesforce, then run again", r.RunID, orDash(r.Reason))
	case runs.StatusStoppedBudget:
		return cli.Prereqf("run %s stopped when its API budget ran out (changes remaining: %s): %s", r.RunID, runview.Remaining(r), orDash(r.Reason))
	case runs.StatusAbandoned:
		return cli.Failf(nil, "dry run %s was interrupted and abandoned; start it again", r.RunID)
	}
	return cli.Failf(nil, "run %s failed: %s; fix that and run again ('optoutctl tenant check %s' checks the Salesforce setup)", r.RunID, orDash(r.Reason), r.Tenant)
}

// follow polls the run until its report is final.
func follow(ctx context.Context, store runs.Store, t, runID string, prog *progress) (runs.Report, error) {
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		r, err := store.Report(ctx, t, runID)
		if err != nil && !errors.Is(err, runs.ErrNotFound) {
			return runs.Report{}, conn.Wrap(err, "read the run's report")
		}
		if err == nil && r.Status.Final() {
			prog.end()
			return r, nil
		}
		if cp, err := store.Active(ctx, t); err == nil && cp.Report.RunID == runID {
			prog.show(cp)
		}
		select {
		case <-ctx.Done():
			prog.end()
			return runs.Report{}, cli.Failf(ctx.Err(), "stopped following run %s (it goes on): %v; see it with 'optoutctl reconcile status %s'", runID, ctx.Err(), t)
		case <-tick.C:
		}
	}
}

func open(ctx context.Context, inv *cli.Invocation) (*conn.Conn, runs.Store, error) {
	c, err := conn.Open(ctx, inv)
	if err != nil {
		return nil, runs.Store{}, err
	}
	kv, err := c.JS.KeyValue(ctx, c.Topology.RunsBucket())
	if err != nil {
		c.Close()
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, runs.Store{}, cli.Prereqf("NATS has no bucket %s (namespace %q): start the reconciler once so it provisions NATS, or set OPTOUT_NAMESPACE (--namespace) to the services' namespace",
				c.Topology.RunsBucket(), c.Topology.Namespace)
		}
		return nil, runs.Store{}, cli.Failf(err, "bucket %s: %v", c.Topology.RunsBucket(), err)
	}
	return c, runs.Store{KV: kv}, nil
}

// user names the requester in reports: the login name, never an email.
func user(inv *cli.Invocation) string {
	for _, k := range []string{"USER", "LOGNAME", "USERNAME"} {
		if v, ok := inv.Getenv(k); ok && strings.TrimSpace(v) != "" {
			v, _, _ = strings.Cut(strings.TrimSpace(v), "@")
			return v
		}
	}
	return "unknown"
}

func statusCmd(inv *cli.Invocation) *cobra.Command {
	return &cobra.Command{
		Use:               "status <tenant>",
		Short:             "the current run's progress (if any) and the last finished run's report",
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			c, store, err := open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := store.Status(ctx, t)
			if err != nil {
				return conn.Wrap(err, "read the tenant's runs")
			}
			last, err := lastFinished(ctx, store, t)
			if err != nil {
				return err
			}
			settings, err := c.Tenants.Get(ctx, t)
			if err != nil {
				return conn.Wrap(err, "read the tenant's settings")
			}
			var claim runs.SlotClaim
			if st.Slot != nil {
				claim = *st.Slot
			}
			next := runview.NextRun(settings, claim, st.LastSuccess, time.Now())
			if inv.Output == cli.FormatJSON {
				return cli.WriteJSON(inv.Stdout, struct {
					runs.TenantStatus
					LastFinished *runs.Report `json:"lastFinished,omitempty"`
					NextRun      runview.Next `json:"nextRun"`
				}{st, last, next})
			}
			nextLine := "Next run: " + next.Text
			if settings.SyncEnabled && !next.Due {
				nextLine += fmt.Sprintf("; start one now with 'optoutctl reconcile run %s'", t)
			}
			if st.Active == nil && last == nil {
				if err := mustKnow(ctx, inv, c, t); err != nil {
					return err
				}
				fmt.Fprintf(inv.Stdout, "No runs of tenant %s yet. Start one with 'optoutctl reconcile dry-run %s'.\n", t, t)
				fmt.Fprintln(inv.Stdout, nextLine)
				return nil
			}
			fmt.Fprintln(inv.Stdout, nextLine)
			if st.Active != nil {
				fmt.Fprintln(inv.Stdout, "Current run")
				if err := activeBlock(*st.Active).Write(inv.Stdout); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(inv.Stdout, "Current run: none")
			}
			if st.LastSuccess != nil {
				fmt.Fprintf(inv.Stdout, "Last success: run %s, finished %s\n", st.LastSuccess.RunID, fmtTime(st.LastSuccess.FinishedAt))
			}
			if st.CDC != nil {
				fmt.Fprintln(inv.Stdout)
				for _, line := range tenantstatus.CDCLines(st.CDC, inv.Clock()) {
					fmt.Fprintln(inv.Stdout, line)
				}
			}
			if last != nil {
				fmt.Fprintln(inv.Stdout, "\nLast report")
				return reportBlock(*last).Write(inv.Stdout)
			}
			return nil
		},
	}
}

// lastFinished is the newest report with a final status (nil when none).
func lastFinished(ctx context.Context, store runs.Store, t string) (*runs.Report, error) {
	hist, err := history(ctx, store, t, 0)
	if err != nil {
		return nil, err
	}
	for i := range hist {
		if hist[i].Status.Final() {
			return &hist[i], nil
		}
	}
	return nil, nil
}

// mustKnow answers not found (exit 3) for a tenant nothing knows, so a typo
// is not read as "no runs yet".
func mustKnow(ctx context.Context, inv *cli.Invocation, c *conn.Conn, t string) error {
	st, err := c.Inspector(inv).Inspect(ctx, t, tenantstatus.Options{})
	if err != nil {
		return conn.Wrap(err, "tenant "+t)
	}
	if !st.Known {
		return cli.NotFoundf("tenant %s not found: it has no settings, events, dead letters or history; check the name", t)
	}
	return nil
}

func historyCmd(inv *cli.Invocation) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:               "history <tenant> [--limit N]",
		Short:             "a tenant's past runs, newest first",
		Args:              cli.ExactArgs("tenant"),
		ValidArgsFunction: conn.CompleteTenant(inv),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t := args[0]
			if !event.ValidTenant(t) {
				return cli.Usagef("tenant %q: want 1-64 characters of A-Z a-z 0-9 _ -", t)
			}
			if limit < 0 {
				return cli.Usagef("--limit %d: want 0 or more", limit)
			}
			c, store, err := open(ctx, inv)
			if err != nil {
				return err
			}
			defer c.Close()
			hist, err := history(ctx, store, t, limit)
			if err != nil {
				return err
			}
			if len(hist) == 0 {
				if err := mustKnow(ctx, inv, c, t); err != nil {
					return err
				}
			}
			tbl := &cli.Table{
				Header: slices.Concat([]string{"RUN", "STARTED", "KIND", "TRIGGER", "STATUS", "DURATION"}, runview.Columns, []string{"API", "REASON"}),
				Empty:  "No runs of tenant " + t + " yet.",
			}
			for _, r := range hist {
				tbl.Rows = append(tbl.Rows, slices.Concat(
					[]string{r.RunID, fmtTime(r.StartedAt), kind(r.DryRun), trigger(r.Trigger), string(r.Status), fmtDuration(r)},
					runview.Cells(r), []string{fmt.Sprint(r.API.Spent), r.Reason}))
			}
			return inv.Print(tbl, hist)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&limit, "limit", 20, "show at most this many (0: all)")
	return cmd
}

// history is the tenant's reports, newest start first, at most limit (0:
// all). Run ids sort by start time only to the second, so runs started in
// the same second are ordered here by their start time.
func history(ctx context.Context, store runs.Store, t string, limit int) ([]runs.Report, error) {
	hist, err := store.History(ctx, t, 0)
	if err != nil {
		return nil, conn.Wrap(err, "read the tenant's runs")
	}
	slices.SortStableFunc(hist, func(a, b runs.Report) int {
		if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(b.RunID, a.RunID)
	})
	if limit > 0 && len(hist) > limit {
		hist = hist[:limit]
	}
	return hist, nil
}
