// Package chartspanel is the admin page's charts section: per tenant, time
// from unsubscribe to Salesforce (p50/p99) and the backlog over the last 24
// hours, opt-outs per hour by source, dead letters per day, and the nightly
// runs' API requests against their budget. They are computed from the
// project's own records (the ledger's trail, the dead-letter stream, the
// run reports), so they need no Prometheus, and drawn as SVG on the
// server, so the page needs no JavaScript.
package chartspanel

import (
	"context"
	"html/template"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// Panel shows a tenant's charts.
type Panel struct {
	Proof proof.Source
	Runs  runs.Store
	// Now is the clock (default time.Now).
	Now func() time.Time
}

var _ page.Panel = Panel{}

// ID implements page.Panel.
func (Panel) ID() string { return "charts" }

// Heading implements page.Panel.
func (Panel) Heading() string { return "At a glance" }

var tmpl = template.Must(template.New("charts").Parse(`<div class="charts">
{{range .}}<figure>
{{.SVG}}
<figcaption>{{.Title}}</figcaption>
</figure>
{{end}}</div>
`))

// Render implements page.Panel.
func (p Panel) Render(ctx context.Context, w io.Writer, tenant string) error {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	// Whole hours, the current one included.
	end := now().UTC().Truncate(time.Hour).Add(time.Hour)
	r := Records{End: end}
	if err := proof.Compliance(ctx, p.Proof, tenant, end.Add(-24*time.Hour), time.Time{}, func(h proof.Honour) error {
		r.Honours = append(r.Honours, h)
		return nil
	}); err != nil {
		return err
	}
	topo := p.Proof.Topology
	if err := natsx.ReadSubject(ctx, p.Proof.JS, topo.DLQStream(), topo.DLQSubject(tenant), func(m jetstream.Msg) error {
		if md, err := m.Metadata(); err == nil {
			r.DeadLetters = append(r.DeadLetters, md.Timestamp)
		}
		return nil
	}, natsx.StoredSince(end.Add(-8*24*time.Hour))); err != nil {
		return err
	}
	reports, err := p.Runs.History(ctx, tenant, 0)
	if err != nil {
		return err
	}
	r.Runs = reports
	return tmpl.Execute(w, Charts(r))
}
