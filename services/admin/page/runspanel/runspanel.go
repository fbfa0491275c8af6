// Package runspanel is the admin page's "Last nightly runs" section: the
// tenant's unfinished run with its progress, and its last few run reports
// (status, when, counts, writes, API spent), read from the runs bucket the
// reconciler writes. Add it to page.Deps.Panels where the page is wired.
package runspanel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page"

	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// DefaultLimit is how many reports the panel lists.
const DefaultLimit = 5

// Panel shows a tenant's nightly runs.
type Panel struct {
	Runs runs.Store
	// Limit is how many reports to list (default DefaultLimit).
	Limit int
}

var _ page.Panel = Panel{}

// ID implements page.Panel.
func (Panel) ID() string { return "nightly-runs" }

// Heading implements page.Panel.
func (Panel) Heading() string { return "Last nightly runs" }

type runView struct {
	Kind, Status, Trigger, Started, Finished, Duration, Reason string
	Failed                                                     bool
	Counts, Writes, API                                        string
}

type activeView struct {
	Kind, Trigger, Started, Phase, Progress, Retry, LastError string
}

type view struct {
	CDC    []string
	Active *activeView
	Runs   []runView
}

var tmpl = template.Must(template.New("runs").Parse(`{{range .CDC}}<p>{{.}}</p>
{{end}}{{with .Active}}<p><strong>Running now:</strong> a {{.Kind}} ({{.Trigger}}), started {{.Started}}, {{.Phase}}.</p>
<p>{{.Progress}}</p>
{{if .Retry}}<p>Interrupted{{if .LastError}} ({{.LastError}}){{end}}; it resumes at {{.Retry}}.</p>
{{end}}{{end}}{{if .Runs}}<table>
<thead><tr><th scope="col">Started</th><th scope="col">Run</th><th scope="col">Result</th><th scope="col">People compared</th><th scope="col">Changes</th><th scope="col">API requests</th></tr></thead>
<tbody>
{{range .Runs}}<tr><td>{{.Started}}</td><td>{{.Kind}}, {{.Trigger}}{{if .Duration}}, took {{.Duration}}{{end}}</td><td>{{if .Failed}}<strong>{{.Status}}</strong>{{else}}{{.Status}}{{end}}{{if .Reason}}: {{.Reason}}{{end}}</td><td>{{.Counts}}</td><td>{{.Writes}}</td><td>{{.API}}</td></tr>
{{end}}</tbody>
</table>
{{else}}{{if not .Active}}<p>No runs yet. The first runs at the tenant's scheduled time once "Sync with Salesforce" is on.</p>
{{end}}{{end}}`))

// Render implements page.Panel.
func (p Panel) Render(ctx context.Context, w io.Writer, tenant string) error {
	limit := cmp.Or(p.Limit, DefaultLimit)
	var v view
	if c, err := p.Runs.CDC(ctx, tenant); err == nil {
		v.CDC = tenantstatus.CDCLines(&c, time.Now())
	} else if !errors.Is(err, runs.ErrNotFound) {
		return err
	}
	cp, err := p.Runs.Active(ctx, tenant)
	switch {
	case err == nil:
		v.Active = active(cp)
	case !errors.Is(err, runs.ErrNotFound):
		return err
	}
	hist, err := p.Runs.History(ctx, tenant, 0)
	if err != nil {
		return err
	}
	// Run ids order runs only to the second; order by start time.
	slices.SortStableFunc(hist, func(a, b runs.Report) int { return b.StartedAt.Compare(a.StartedAt) })
	for _, r := range hist {
		if len(v.Runs) == limit {
			break
		}
		if v.Active != nil && r.RunID == cp.Report.RunID {
			continue // shown above with its progress
		}
		v.Runs = append(v.Runs, report(r))
	}
	return tmpl.Execute(w, v)
}

func kind(dry bool) string {
	if dry {
		return "dry run"
	}
	return "run"
}

var statusWords = map[runs.Status]string{
	runs.StatusRunning:       "running",
	runs.StatusSucceeded:     "succeeded",
	runs.StatusStoppedGuard:  "stopped by the mass-resubscribe guard",
	runs.StatusStoppedBudget: "stopped: API budget spent",
	runs.StatusFailed:        "failed",
	runs.StatusAbandoned:     "abandoned",
}

func trigger(t runs.Trigger) string {
	switch t.Kind {
	case runs.TriggerSchedule:
		return "scheduled"
	case runs.TriggerCatchUp:
		return "scheduled, started late"
	case runs.TriggerManual:
		if t.By != "" {
			return "started by " + t.By
		}
		return "started by hand"
	}
	return string(t.Kind)
}

func report(r runs.Report) runView {
	c, w, a := r.Counts, r.Writes, r.API
	v := runView{
		Kind: kind(r.DryRun), Status: cmp.Or(statusWords[r.Status], string(r.Status)), Trigger: trigger(r.Trigger),
		Started: tenantstatus.FormatTime(r.StartedAt), Finished: tenantstatus.FormatTime(r.FinishedAt), Reason: r.Reason,
		Failed: r.Status != runs.StatusSucceeded && r.Status != runs.StatusRunning,
		Counts: fmt.Sprintf("%d opted out in Salesforce, %d in the ledger; %d in both, %d only in Sales Connect, %d only in Salesforce",
			c.SalesforceOptOuts, c.LedgerOptOuts, c.InBoth, c.SalesConnectOnly, c.SalesforceOnly+c.KnownToSalesforceOnly),
		API: fmt.Sprintf("%d of a budget of %d", a.Spent, a.Budget),
	}
	if r.DurationSeconds > 0 {
		v.Duration = tenantstatus.FormatAge(time.Duration(r.DurationSeconds * float64(time.Second)))
	}
	if r.DryRun {
		v.Writes = fmt.Sprintf("would write %d to Salesforce and %d to Sales Connect", w.PlannedSalesforce, w.PlannedSalesConnect)
	} else {
		v.Writes = fmt.Sprintf("%d written to Salesforce, %d to Sales Connect", w.SalesforceWritten, w.LedgerWritten)
		var extra []string
		if n := w.SalesforceFailed + w.LedgerFailed; n > 0 {
			extra = append(extra, fmt.Sprintf("%d failed", n))
		}
		if w.Remaining > 0 {
			extra = append(extra, fmt.Sprintf("%d left for the next run", w.Remaining))
		}
		if len(extra) > 0 {
			v.Writes += " (" + strings.Join(extra, ", ") + ")"
		}
	}
	return v
}

func active(cp runs.Checkpoint) *activeView {
	r := cp.Report
	v := &activeView{Kind: kind(r.DryRun), Trigger: trigger(r.Trigger), Started: tenantstatus.FormatTime(r.StartedAt),
		Phase: strings.ReplaceAll(string(cmp.Or(r.Phase, runs.PhaseStarting)), "_", " "), LastError: cp.LastError}
	if cp.DiffComplete {
		v.Progress = fmt.Sprintf("Written %d of %d to Salesforce and %d of %d to Sales Connect; %d API requests of a budget of %d.",
			r.Writes.SalesforceWritten, r.Writes.PlannedSalesforce, r.Writes.LedgerWritten, r.Writes.PlannedSalesConnect, r.API.Spent, r.API.Budget)
	} else {
		v.Progress = fmt.Sprintf("Comparing: %d Salesforce opt-outs and %d ledger entries read so far; %d API requests of a budget of %d.",
			r.Counts.SalesforceOptOuts, r.Counts.LedgerEntries, r.API.Spent, r.API.Budget)
	}
	if !cp.RetryAt.IsZero() {
		v.Retry = tenantstatus.FormatTime(cp.RetryAt)
	}
	return v
}
