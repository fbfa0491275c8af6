package reconcilecmd

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

func printReport(inv *cli.Invocation, r runs.Report) error {
	if inv.Output == cli.FormatJSON {
		return cli.WriteJSON(inv.Stdout, r)
	}
	return reportBlock(r).Write(inv.Stdout)
}

func fmtTime(t time.Time) string { return tenantstatus.FormatTime(t) }

func fmtDuration(r runs.Report) string {
	if r.DurationSeconds <= 0 && r.FinishedAt.IsZero() {
		return ""
	}
	return time.Duration(r.DurationSeconds * float64(time.Second)).Round(100 * time.Millisecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func trigger(t runs.Trigger) string {
	s := string(t.Kind)
	if t.By != "" {
		s += " by " + t.By
	}
	if !t.Slot.IsZero() {
		s += " (slot " + fmtTime(t.Slot) + ")"
	}
	return s
}

// reportBlock is a run's report as a describe block.
func reportBlock(r runs.Report) *cli.KV {
	var kv cli.KV
	kv.Add("Run:", r.RunID+" ("+kind(r.DryRun)+")")
	kv.Add("Tenant:", r.Tenant)
	kv.Add("Status:", string(r.Status))
	if r.Reason != "" {
		kv.Add("Reason:", r.Reason)
	}
	if r.Status == runs.StatusRunning {
		kv.Add("Phase:", phaseWord(r.Phase))
	}
	kv.Add("Trigger:", trigger(r.Trigger))
	kv.Add("Field:", r.Field+", policy "+r.Policy)
	kv.Add("Started:", fmtTime(r.StartedAt))
	kv.Add("Finished:", fmtTime(r.FinishedAt))
	kv.Add("Duration:", fmtDuration(r))
	kv.Add("Attempts:", fmt.Sprintf("%d, last on %s (fence %d)", r.Attempts, orDash(r.Holder), r.Fence))
	c := r.Counts
	kv.Add("Salesforce:", fmt.Sprintf("%d opted out", c.SalesforceOptOuts))
	kv.Add("Ledger:", fmt.Sprintf("%d entries, %d opted out", c.LedgerEntries, c.LedgerOptOuts))
	kv.Add("Compared:", fmt.Sprintf("in both %d (unconfirmed %d); Sales Connect only %d; Salesforce only %d (unknown to the ledger %d); parked without id %d; malformed ids %d",
		c.InBoth, c.Unconfirmed, c.SalesConnectOnly, c.SalesforceOnly, c.KnownToSalesforceOnly, c.ParkedNoID, c.MalformedIDs))
	kv.Add("Conflicts:", fmt.Sprintf("resubscribed in Salesforce %d (applied %d, written back %d); cleared before the opt-out %d; resubscribed in Sales Connect %d; missing in Salesforce %d",
		c.ResubscribedInSalesforce, c.ResubscribesApplied, c.ResubscribesWrittenBack, c.ClearedBeforeOptOut, c.ResubscribedInSalesConnect, c.MissingInSalesforce))
	w := r.Writes
	kv.Add("Planned:", fmt.Sprintf("%d to Salesforce, %d to Sales Connect", w.PlannedSalesforce, w.PlannedSalesConnect))
	kv.Add("Written:", fmt.Sprintf("Salesforce %d (failed %d); ledger %d (failed %d); events %d; remaining %d",
		w.SalesforceWritten, w.SalesforceFailed, w.LedgerWritten, w.LedgerFailed, w.EventsPublished, w.Remaining))
	a := r.API
	kv.Add("API:", fmt.Sprintf("spent %d of a budget of %d (reads %d, lookups %d, writes %d, pages %d)%s",
		a.Spent, a.Budget, a.Reads, a.Lookups, a.Writes, a.Pages, readPath(a.ReadPath)))
	if g := r.Guard; g != nil {
		verdict := "not tripped"
		if g.Tripped {
			verdict = "TRIPPED"
		}
		kv.Add("Guard:", fmt.Sprintf("%s: %d resubscribes, limit %d (%d opt-outs)", verdict, g.Resubscribes, g.Limit, g.OptOuts))
	}
	kv.Add("Trace:", r.TraceID)
	return &kv
}

func readPath(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, k+" "+v)
	}
	slices.Sort(parts)
	return "; read " + strings.Join(parts, ", ")
}

// activeBlock is the progress of an unfinished run.
func activeBlock(cp runs.Checkpoint) *cli.KV {
	r := cp.Report
	var kv cli.KV
	kv.Add("Run:", r.RunID+" ("+kind(r.DryRun)+")")
	kv.Add("Trigger:", trigger(r.Trigger))
	kv.Add("Started:", fmtTime(r.StartedAt))
	kv.Add("Progress:", progressLine(cp))
	kv.Add("Replica:", fmt.Sprintf("%s (attempt %d)", orDash(r.Holder), r.Attempts))
	if cp.LastError != "" {
		kv.Add("Last error:", fmt.Sprintf("%s (%d in a row)", cp.LastError, cp.Failures))
	}
	if !cp.RetryAt.IsZero() {
		kv.Add("Resumes at:", fmtTime(cp.RetryAt))
	}
	kv.Add("Updated:", fmtTime(cp.UpdatedAt))
	return &kv
}

var phaseOrder = []runs.Phase{
	runs.PhaseStarting, runs.PhaseReadingSalesforce, runs.PhaseReadingLedger, runs.PhaseLookingUp,
	runs.PhaseWritingSalesConnect, runs.PhaseWritingSalesforce, runs.PhaseDone,
}

func phaseWord(p runs.Phase) string {
	if p == "" {
		return "starting"
	}
	return strings.ReplaceAll(string(p), "_", " ")
}

// fraction estimates how far a run is (0..1): the phase, and within the
// writing phases the share of planned writes made.
func fraction(cp runs.Checkpoint) float64 {
	r := cp.Report
	i := slices.Index(phaseOrder, r.Phase)
	if i < 0 {
		i = 0
	}
	steps := float64(len(phaseOrder) - 1)
	f := float64(i) / steps
	within := func(done, planned int64) float64 {
		if planned <= 0 {
			return 0
		}
		return min(1, float64(done)/float64(planned)) / steps
	}
	switch r.Phase {
	case runs.PhaseWritingSalesConnect:
		f += within(r.Writes.LedgerWritten+r.Writes.LedgerFailed, r.Writes.PlannedSalesConnect)
	case runs.PhaseWritingSalesforce:
		f += within(r.Writes.SalesforceWritten+r.Writes.SalesforceFailed, r.Writes.PlannedSalesforce)
	}
	return min(1, f)
}

// progressLine is one line of a running run's progress.
func progressLine(cp runs.Checkpoint) string {
	r := cp.Report
	i := max(0, slices.Index(phaseOrder, r.Phase))
	s := fmt.Sprintf("step %d/%d %s", i+1, len(phaseOrder)-1, phaseWord(r.Phase))
	if cp.DiffComplete {
		s += fmt.Sprintf("; to Salesforce %d/%d, to Sales Connect %d/%d",
			r.Writes.SalesforceWritten, r.Writes.PlannedSalesforce, r.Writes.LedgerWritten, r.Writes.PlannedSalesConnect)
	} else if r.Counts.SalesforceOptOuts > 0 || r.Counts.LedgerEntries > 0 {
		s += fmt.Sprintf("; read %d Salesforce opt-outs, %d ledger entries", r.Counts.SalesforceOptOuts, r.Counts.LedgerEntries)
	}
	s += fmt.Sprintf("; API %d", r.API.Spent)
	if r.API.Budget > 0 {
		s += fmt.Sprintf("/%d", r.API.Budget)
	}
	if !cp.RetryAt.IsZero() {
		s += "; interrupted, resumes at " + fmtTime(cp.RetryAt)
	}
	return s
}

// progress shows a followed run: a bar rewritten in place on a terminal,
// a plain line per change (at most every few seconds) otherwise.
type progress struct {
	w        io.Writer
	tty      bool
	last     string
	lastAt   time.Time
	lastStep runs.Phase
	drawn    bool
}

// PlainEvery is the least time between two plain progress lines of one phase.
var PlainEvery = 3 * time.Second

// newProgress draws on w; tty is whether it is a terminal (main asks the
// real file: w may be the secret scrubber wrapping it).
func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty}
}

func bar(f float64) string {
	const width = 24
	n := int(f * width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func (p *progress) show(cp runs.Checkpoint) {
	if p == nil {
		return
	}
	line := progressLine(cp)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s %3.0f%% %s", bar(fraction(cp)), 100*fraction(cp), line)
		p.drawn = true
		return
	}
	now := time.Now()
	if line == p.last || (cp.Report.Phase == p.lastStep && now.Sub(p.lastAt) < PlainEvery) {
		return
	}
	fmt.Fprintf(p.w, "progress: %s\n", line)
	p.last, p.lastAt, p.lastStep = line, now, cp.Report.Phase
}

func (p *progress) end() {
	if p != nil && p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}
