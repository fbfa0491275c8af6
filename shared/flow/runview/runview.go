// Package runview puts a reconcile run's report and progress into words.
// It is the one home of the names of a run's counts: optoutctl (a report,
// `reconcile status`, a followed run's progress) and the admin page's runs
// panel render from it, so no two places name a count differently.
//
// The names say what each count is: a confirmation (the ledger recording
// that Salesforce shows an opt-out both sides hold) is not a change; a
// total is followed by its parts, never by a class beside it; a run that
// stopped before it compared both sides says "not compared", never 0.
package runview

import (
	"fmt"
	"slices"
	"strings"

	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// Line is one labelled line of a report.
type Line struct{ Label, Text string }

// NotCompared is what a run that stopped before it had compared both
// sides says in place of its counts and of what remains.
const NotCompared = "not compared: the run stopped before it had read both sides"

// Changes made to Sales Connect (each announced by an event) are the
// ledger writes that are not confirmations.
func changesWritten(w runs.Writes) int64 { return w.LedgerWritten - w.LedgerConfirmations }
func changesPlanned(w runs.Writes) int64 { return w.PlannedSalesConnect - w.PlannedConfirmations }

// Scan says which kind of run it was, why, and what it read (empty for
// reports from before incremental runs).
func Scan(r runs.Report) string {
	sc := r.Scan
	if sc == nil {
		return ""
	}
	switch sc.Kind {
	case runs.ScanIncremental:
		return fmt.Sprintf("incremental (%s): read %d Salesforce records changed since %s (Salesforce's clock, overlap included) and %d ledger changes",
			sc.Why, sc.SalesforceRead, sc.Since.UTC().Format("2006-01-02 15:04:05 UTC"), sc.LedgerRead)
	default:
		return fmt.Sprintf("full (%s): read %d Salesforce opt-outs and %d ledger entries", sc.Why, sc.SalesforceRead, sc.LedgerRead)
	}
}

// Incremental reports whether the run compared only what changed.
func Incremental(r runs.Report) bool { return r.Scan != nil && r.Scan.Kind == runs.ScanIncremental }

// Totals says how many opt-outs each side held (an incremental run: of
// what it compared).
func Totals(r runs.Report) string {
	c := r.Counts
	s := fmt.Sprintf("%d opted out in Salesforce; ledger: %d people, %d opted out", c.SalesforceOptOuts, c.LedgerEntries, c.LedgerOptOuts)
	if Incremental(r) {
		s = fmt.Sprintf("of what changed: %d opted out in Salesforce; ledger: %d people compared, %d opted out", c.SalesforceOptOuts, c.LedgerEntries, c.LedgerOptOuts)
	}
	if r.NotCompared {
		s += " (read before the run stopped)"
	}
	return s
}

// Compared classifies the people the run compared: each total with its
// parts in brackets.
func Compared(r runs.Report) string {
	if r.NotCompared {
		return NotCompared
	}
	c := r.Counts
	s := fmt.Sprintf("opted out on both sides %d (of which %d confirmations to record); only in Sales Connect %d; only in Salesforce %d (%d known to the ledger, %d new to it); opted out without a Salesforce id %d; malformed Salesforce ids %d",
		c.InBoth, c.Unconfirmed, c.SalesConnectOnly, c.SalesforceOnly+c.KnownToSalesforceOnly, c.SalesforceOnly, c.KnownToSalesforceOnly, c.ParkedNoID, c.MalformedIDs)
	if c.LeadsConverted > 0 {
		s += fmt.Sprintf("; of all these, %d known by a Lead Salesforce converted, compared on its Contact", c.LeadsConverted)
	}
	return s
}

// Conflicts are the disagreements the run decided by the policy.
func Conflicts(r runs.Report) string {
	if r.NotCompared {
		return NotCompared
	}
	c := r.Counts
	return fmt.Sprintf("resubscribed in Salesforce %d (%d applied, %d written back); cleared in Salesforce before the opt-out %d; resubscribed in Sales Connect %d; missing in Salesforce %d",
		c.ResubscribedInSalesforce, c.ResubscribesApplied, c.ResubscribesWrittenBack, c.ClearedBeforeOptOut, c.ResubscribedInSalesConnect, c.MissingInSalesforce)
}

// Planned is what the diff planned.
func Planned(r runs.Report) string {
	if r.NotCompared {
		return NotCompared
	}
	w := r.Writes
	return fmt.Sprintf("Salesforce: %d records to set; Sales Connect: %d changes (each with an event), %d confirmations to record",
		w.PlannedSalesforce, changesPlanned(w), w.PlannedConfirmations)
}

// Remaining is what the run left for the next one.
func Remaining(r runs.Report) string {
	if r.NotCompared {
		return "not known (not compared)"
	}
	return fmt.Sprintf("%d", r.Writes.Remaining)
}

// Written is what the run made, by every attempt.
func Written(r runs.Report) string {
	w := r.Writes
	if r.DryRun {
		return "nothing (dry run); remaining " + Remaining(r)
	}
	s := fmt.Sprintf("Salesforce: %d set, %d failed; Sales Connect: %d changes (%d events), %d failed, %d confirmations recorded; remaining %s",
		w.SalesforceWritten, w.SalesforceFailed, changesWritten(w), w.EventsPublished, w.LedgerFailed, w.LedgerConfirmations, Remaining(r))
	if w.LeadsFollowed > 0 {
		s += fmt.Sprintf("; %d people followed from a converted Lead to its Contact", w.LeadsFollowed)
	}
	return s
}

// API is the run's use of its API budget.
func API(r runs.Report) string {
	a := r.API
	return fmt.Sprintf("spent %d of a budget of %d (reads %d, lookups %d, writes %d, pages %d)%s",
		a.Spent, a.Budget, a.Reads, a.Lookups, a.Writes, a.Pages, readPath(a.ReadPath))
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

// Counts are a report's count lines, labelled.
func Counts(r runs.Report) []Line {
	var lines []Line
	if s := Scan(r); s != "" {
		lines = append(lines, Line{"Scan:", s})
	}
	return append(lines, []Line{
		{"Totals:", Totals(r)},
		{"Compared:", Compared(r)},
		{"Conflicts:", Conflicts(r)},
		{"Planned:", Planned(r)},
		{"Written:", Written(r)},
		{"API:", API(r)},
	}...)
}

// Phases, in order.
var phases = []runs.Phase{
	runs.PhaseStarting, runs.PhaseReadingSalesforce, runs.PhaseReadingLedger, runs.PhaseLookingUp,
	runs.PhaseWritingSalesConnect, runs.PhaseWritingSalesforce, runs.PhaseDone,
}

// PhaseWord names a phase.
func PhaseWord(p runs.Phase) string {
	if p == "" {
		p = runs.PhaseStarting
	}
	return strings.ReplaceAll(string(p), "_", " ")
}

// Fraction estimates how far a run is (0..1): the phase, and within the
// writing phases the share of planned writes made.
func Fraction(cp runs.Checkpoint) float64 {
	r := cp.Report
	i := max(0, slices.Index(phases, r.Phase))
	steps := float64(len(phases) - 1)
	f := float64(i) / steps
	within := func(done, planned int64) float64 {
		if planned <= 0 {
			return 0
		}
		return min(1, float64(done)/float64(planned)) / steps
	}
	w := r.Writes
	switch r.Phase {
	case runs.PhaseWritingSalesConnect:
		f += within(changesWritten(w)+w.LedgerFailed, changesPlanned(w))
	case runs.PhaseWritingSalesforce:
		f += within(w.SalesforceWritten+w.SalesforceFailed, w.PlannedSalesforce)
	}
	return min(1, f)
}

// Progress is one line of an unfinished run's progress. A batch in flight
// is named: its writes are counted when it ends, or, when its attempt
// stopped in its middle, by the attempt that resumes the run.
func Progress(cp runs.Checkpoint) string {
	r := cp.Report
	w := r.Writes
	i := max(0, slices.Index(phases, r.Phase))
	s := fmt.Sprintf("step %d/%d %s", i+1, len(phases)-1, PhaseWord(r.Phase))
	if cp.DiffComplete {
		s += fmt.Sprintf("; Salesforce %d of %d records set, Sales Connect %d of %d changes made",
			w.SalesforceWritten, w.PlannedSalesforce, changesWritten(w), changesPlanned(w))
		if n := w.LedgerConfirmations; n > 0 || w.PlannedConfirmations > 0 {
			s += fmt.Sprintf(", %d confirmations recorded", n)
		}
	} else if r.Counts.SalesforceOptOuts > 0 || r.Counts.LedgerEntries > 0 {
		s += fmt.Sprintf("; read %d Salesforce opt-outs, %d ledger entries", r.Counts.SalesforceOptOuts, r.Counts.LedgerEntries)
	}
	if f := cp.InFlight; f != nil && len(f.Ops) > 0 {
		side := "Sales Connect writes"
		if f.Side == runs.SideSalesforce {
			side = "Salesforce records"
		}
		s += fmt.Sprintf("; a batch of %d %s in flight, not yet counted", len(f.Ops), side)
	}
	s += fmt.Sprintf("; API %d", r.API.Spent)
	if r.API.Budget > 0 {
		s += fmt.Sprintf("/%d", r.API.Budget)
	}
	return s
}

// Columns name a report's counts as table columns (a row per run), and
// Cells gives them for one report.
var Columns = []string{"SF OPT-OUTS", "SF TO SET", "SC CHANGES PLANNED", "SF SET", "SC CHANGES MADE"}

// Cells are a report's values under Columns.
func Cells(r runs.Report) []string {
	w := r.Writes
	planSF, planSC := fmt.Sprint(w.PlannedSalesforce), fmt.Sprint(changesPlanned(w))
	if r.NotCompared {
		planSF, planSC = "not compared", "not compared"
	}
	return []string{fmt.Sprint(r.Counts.SalesforceOptOuts), planSF, planSC, fmt.Sprint(w.SalesforceWritten), fmt.Sprint(changesWritten(w))}
}
