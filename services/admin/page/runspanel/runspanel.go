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
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page"

	"github.com/optout-sync/optout-sync/shared/flow/runview"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// DefaultLimit is how many reports the panel lists.
const DefaultLimit = 5

// Panel shows a tenant's nightly runs.
type Panel struct {
	Runs runs.Store
	// Settings, when set, tell the panel when the next run is.
	Settings tenant.Store
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Limit is how many reports to list (default DefaultLimit).
	Limit int
	// JaegerURL, when set, links each run to its trace in Jaeger's UI
	// (<JaegerURL>/trace/<trace id>).
	JaegerURL string
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
	Trace                                                      string // the run's trace in Jaeger
	// PreviewHeading and Preview list a dry run's planned changes.
	PreviewHeading string
	Preview        []string
}

type activeView struct {
	Kind, Trigger, Started, Phase, Progress, Retry, LastError string
}

type view struct {
	Next   string
	CDC    []string
	Active *activeView
	Runs   []runView
}

var tmpl = template.Must(template.New("runs").Parse(`{{with .Next}}<p><strong>Next run:</strong> {{.}}</p>
{{end}}{{range .CDC}}<p>{{.}}</p>
{{end}}{{with .Active}}<p><strong>Running now:</strong> a {{.Kind}} ({{.Trigger}}), started {{.Started}}, {{.Phase}}.</p>
<p>{{.Progress}}</p>
{{if .Retry}}<p>Interrupted{{if .LastError}} ({{.LastError}}){{end}}; it resumes at {{.Retry}}.</p>
{{end}}{{end}}{{if .Runs}}<table>
<thead><tr><th scope="col">Started</th><th scope="col">Run</th><th scope="col">Result</th><th scope="col">People compared</th><th scope="col">Changes</th><th scope="col">API requests</th></tr></thead>
<tbody>
{{range .Runs}}<tr><td>{{.Started}}</td><td>{{.Kind}}, {{.Trigger}}{{if .Duration}}, took {{.Duration}}{{end}}{{with .Trace}}; <a href="{{.}}">its trace</a>{{end}}</td><td>{{if .Failed}}<strong>{{.Status}}</strong>{{else}}{{.Status}}{{end}}{{if .Reason}}: {{.Reason}}{{end}}</td><td>{{.Counts}}</td><td>{{.Writes}}{{if .Preview}}<details><summary>{{.PreviewHeading}}</summary><ul>{{range .Preview}}<li>{{.}}</li>{{end}}</ul></details>{{end}}</td><td>{{.API}}</td></tr>
{{end}}</tbody>
</table>
{{else}}{{if not .Active}}<p>No runs yet. The first runs at the tenant's scheduled time after "Sync with Salesforce" is turned on.</p>
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
	if p.Settings.KV != nil {
		if v.Next, err = p.next(ctx, tenant); err != nil {
			return err
		}
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
		v.Runs = append(v.Runs, p.report(r))
	}
	return tmpl.Execute(w, v)
}

// next says when the next run is, by the reconciler's own rule.
func (p Panel) next(ctx context.Context, t string) (string, error) {
	st, err := p.Settings.Get(ctx, t)
	if err != nil {
		return "", err
	}
	claim, err := p.Runs.Slot(ctx, t)
	if err != nil {
		return "", err
	}
	var last *runs.LastSuccess
	if l, err := p.Runs.LastSuccess(ctx, t); err == nil {
		last = &l
	} else if !errors.Is(err, runs.ErrNotFound) {
		return "", err
	}
	now := time.Now()
	if p.Now != nil {
		now = p.Now()
	}
	n := runview.NextRun(st, claim, last, now)
	if st.SyncEnabled && !n.Due {
		return n.Text + "; to have one now, use Run now (or 'optoutctl reconcile run " + t + "').", nil
	}
	return n.Text + ".", nil
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

func (p Panel) report(r runs.Report) runView {
	v := runView{
		Kind: kind(r.DryRun), Status: cmp.Or(statusWords[r.Status], string(r.Status)), Trigger: trigger(r.Trigger),
		Started: tenantstatus.FormatTime(r.StartedAt), Finished: tenantstatus.FormatTime(r.FinishedAt), Reason: r.Reason,
		Failed: r.Status != runs.StatusSucceeded && r.Status != runs.StatusRunning,
		// The counts in the words optoutctl uses (runview, one home).
		Counts: runview.Totals(r) + ". " + runview.Compared(r),
		API:    fmt.Sprintf("%d of a budget of %d", r.API.Spent, r.API.Budget),
	}
	if p.JaegerURL != "" && r.TraceID != "" {
		v.Trace = strings.TrimSuffix(p.JaegerURL, "/") + "/trace/" + url.PathEscape(r.TraceID)
	}
	if sc := runview.Scan(r); sc != "" {
		// Which kind of run, and why: an incremental run's counts are of
		// what changed.
		v.Counts = "Scan: " + sc + ". " + v.Counts
	}
	if r.DurationSeconds > 0 {
		v.Duration = tenantstatus.FormatAge(time.Duration(r.DurationSeconds * float64(time.Second)))
	}
	if r.DryRun {
		v.Writes = "Would make: " + runview.Planned(r)
		v.PreviewHeading, v.Preview = runview.PreviewHeading(r), runview.PreviewLines(r)
	} else {
		v.Writes = runview.Written(r)
	}
	return v
}

func active(cp runs.Checkpoint) *activeView {
	r := cp.Report
	v := &activeView{Kind: kind(r.DryRun), Trigger: trigger(r.Trigger), Started: tenantstatus.FormatTime(r.StartedAt),
		Phase: runview.PhaseWord(r.Phase), LastError: cp.LastError}
	v.Progress = runview.Progress(cp) + "."
	if !cp.RetryAt.IsZero() {
		v.Retry = tenantstatus.FormatTime(cp.RetryAt)
	}
	return v
}
