package reconcilecmd

import (
	"fmt"
	"io"

	"strings"
	"time"

	"github.com/optout-sync/optout-sync/services/optoutctl/internal/cli"
	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

func printReport(inv *cli.Invocation, r runs.Report) error {
	if inv.Output == cli.FormatJSON {
		return cli.WriteJSON(inv.Stdout, r)
	}
	if err := reportBlock(r).Write(inv.Stdout); err != nil {
		return err
	}
	if h := runview.PreviewHeading(r); h != "" {
		fmt.Fprintf(inv.Stdout, "\n%s\n", h)
		for _, l := range runview.PreviewLines(r) {
			fmt.Fprintf(inv.Stdout, "  %s\n", l)
		}
	}
	return nil
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
	for _, l := range runview.Counts(r) {
		kv.Add(l.Label, l.Text)
	}
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

func phaseWord(p runs.Phase) string { return runview.PhaseWord(p) }

func fraction(cp runs.Checkpoint) float64 { return runview.Fraction(cp) }

// progressLine is one line of a running run's progress.
func progressLine(cp runs.Checkpoint) string {
	s := runview.Progress(cp)
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
