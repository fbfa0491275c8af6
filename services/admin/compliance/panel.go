package compliance

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/shared/domain/compliance"
)

// Panel is the tenant page's "Compliance clock" section.
type Panel struct{ Tracker *Tracker }

var _ page.Panel = Panel{}

// ID implements page.Panel.
func (Panel) ID() string { return "compliance-clock" }

// Heading implements page.Panel.
func (Panel) Heading() string { return "Compliance clock" }

// warnAfter is when the page starts to warn: half the 48 hours, as the
// chart's alert does by default.
const warnAfter = 24 * time.Hour

type deadlineView struct {
	Name, Rule, Deadline, Left string
	Overdue                    bool
}

type clockView struct {
	Loaded     bool
	Unhonoured int
	// Class is the notice's colour: "error" past a deadline, "warn" past
	// a day's wait, "" before.
	Class      string
	Since, Age string
	Key        string
	Deadlines  []deadlineView
}

var tmpl = template.Must(template.New("clock").Parse(`{{if not .Loaded}}<p>Reading the ledger; the clock shows once it is read.</p>
{{else if eq .Unhonoured 0}}<p class="notice ok" role="status">Every opt-out is honoured in Salesforce: nothing is on the clock.</p>
{{else}}<p class="notice{{with .Class}} {{.}}{{end}}"><strong>{{.Unhonoured}}</strong> opt-out(s) not yet honoured in Salesforce. The oldest was asked for {{.Since}}, <strong>{{.Age}} ago</strong> (ledger key <code>{{.Key}}</code>).</p>
<table>
<thead><tr><th scope="col">Deadline</th><th scope="col">Rule</th><th scope="col">Due</th><th scope="col">Left</th></tr></thead>
<tbody>
{{range .Deadlines}}<tr><td>{{.Name}}</td><td>{{.Rule}}</td><td>{{.Deadline}}</td><td>{{if .Overdue}}<strong>overdue by {{.Left}}</strong>{{else}}{{.Left}}{{end}}</td></tr>
{{end}}</tbody>
</table>
<p>Business days are Monday to Friday in UTC. The pusher retries on its own; the tenant's health, backlog and dead letters above say why it waits.</p>
{{end}}`))

// Render implements page.Panel.
func (p Panel) Render(_ context.Context, w io.Writer, tenant string) error {
	c, ok := p.Tracker.Clock(tenant)
	return tmpl.Execute(w, view(c, ok))
}

func view(c compliance.Clock, loaded bool) clockView {
	v := clockView{Loaded: loaded, Unhonoured: c.Unhonoured}
	if !loaded || c.Unhonoured == 0 {
		return v
	}
	v.Since, v.Age, v.Key = c.OldestSince.Format(time.RFC3339), human(c.Age()), c.Key
	add := func(name, rule string, due time.Time) {
		left := due.Sub(c.At)
		d := deadlineView{Name: name, Rule: rule, Deadline: due.Format(time.RFC3339), Overdue: left <= 0}
		if d.Overdue {
			left = -left
		}
		d.Left = human(left)
		v.Deadlines = append(v.Deadlines, d)
	}
	add("48 hours", "the large mailbox providers' unsubscribe rule", c.MailboxDeadline)
	add("10 business days", "CAN-SPAM", c.BusinessDaysDeadline)
	switch {
	case c.MailboxOverdue() || c.BusinessDaysOverdue():
		v.Class = "error"
	case c.Age() >= warnAfter:
		v.Class = "warn"
	}
	return v
}

// human writes d as days, hours and minutes.
func human(d time.Duration) string {
	d = d.Round(time.Minute)
	days, h, m := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%d d %d h", days, h)
	case h > 0:
		return fmt.Sprintf("%d h %d min", h, m)
	default:
		return fmt.Sprintf("%d min", m)
	}
}
