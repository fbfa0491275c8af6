package engine

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/store/runs"
)

const meterName = "github.com/optout-sync/optout-sync/services/reconciler"

// Metrics are the reconciler's instruments. Labels carry the tenant id,
// classes and statuses, never person ids or emails.
type Metrics struct {
	duration    metric.Float64Histogram
	runsC       metric.Int64Counter
	records     metric.Int64Counter
	writes      metric.Int64Counter
	apiCalls    metric.Int64Counter
	pages       metric.Int64Counter
	lastSuccess metric.Float64Gauge
}

// NewMetrics registers the instruments on mp (the global provider when nil).
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	out := &Metrics{}
	var err error
	if out.duration, err = m.Float64Histogram("optout_reconcile_run_duration_seconds",
		metric.WithDescription("duration of finished reconcile runs, first attempt to final status"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)); err != nil {
		return nil, err
	}
	if out.runsC, err = m.Int64Counter("optout_reconcile_runs", metric.WithDescription("finished reconcile runs, by final status")); err != nil {
		return nil, err
	}
	if out.records, err = m.Int64Counter("optout_reconcile_records",
		metric.WithDescription("persons classified by finished runs, by class (dry runs included)")); err != nil {
		return nil, err
	}
	if out.writes, err = m.Int64Counter("optout_reconcile_writes", metric.WithDescription("writes made by reconcile runs, by target and outcome")); err != nil {
		return nil, err
	}
	if out.apiCalls, err = m.Int64Counter("optout_reconcile_api_calls", metric.WithDescription("Salesforce API calls spent by finished runs, by purpose")); err != nil {
		return nil, err
	}
	if out.pages, err = m.Int64Counter("optout_reconcile_pages", metric.WithDescription("pages of the opted-out set read, by path")); err != nil {
		return nil, err
	}
	if out.lastSuccess, err = m.Float64Gauge("optout_reconcile_last_success_timestamp_seconds",
		metric.WithDescription("when the tenant's last successful reconcile finished (Unix seconds); alert when older than a day"), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return out, nil
}

func tenantAttr(t string) attribute.KeyValue { return attribute.String("tenant", t) }

func traceAttrs(kv ...attribute.KeyValue) trace.SpanStartOption { return trace.WithAttributes(kv...) }

type classCount struct {
	name string
	n    int64
}

// classCounts lists a report's per-class counts under stable metric names.
func classCounts(c runs.Counts) []classCount {
	return []classCount{
		{"in_both", c.InBoth},
		{"unconfirmed", c.Unconfirmed},
		{"sales_connect_only", c.SalesConnectOnly},
		{"salesforce_only", c.SalesforceOnly},
		{"known_to_salesforce_only", c.KnownToSalesforceOnly},
		{"parked_no_id", c.ParkedNoID},
		{"malformed_id", c.MalformedIDs},
		{"resubscribed_in_salesforce", c.ResubscribedInSalesforce},
		{"resubscribes_applied", c.ResubscribesApplied},
		{"resubscribes_written_back", c.ResubscribesWrittenBack},
		{"cleared_before_opt_out", c.ClearedBeforeOptOut},
		{"resubscribed_in_sales_connect", c.ResubscribedInSalesConnect},
		{"missing_in_salesforce", c.MissingInSalesforce},
	}
}

func (m *Metrics) finished(ctx context.Context, rep runs.Report) {
	if m == nil {
		return
	}
	t := tenantAttr(rep.Tenant)
	status := attribute.String("status", string(rep.Status))
	dry := attribute.Bool("dry_run", rep.DryRun)
	m.duration.Record(ctx, rep.DurationSeconds, metric.WithAttributes(t, status, dry))
	m.runsC.Add(ctx, 1, metric.WithAttributes(t, status, dry))
	for _, c := range classCounts(rep.Counts) {
		if c.n > 0 {
			m.records.Add(ctx, c.n, metric.WithAttributes(t, attribute.String("class", c.name), dry))
		}
	}
	for purpose, n := range map[string]int64{"read": rep.API.Reads, "lookup": rep.API.Lookups, "write": rep.API.Writes,
		"other": rep.API.Spent - rep.API.Reads - rep.API.Lookups - rep.API.Writes} {
		if n > 0 {
			m.apiCalls.Add(ctx, n, metric.WithAttributes(t, attribute.String("purpose", purpose)))
		}
	}
	if rep.Status == runs.StatusSucceeded && !rep.DryRun {
		m.LastSuccess(ctx, rep.Tenant, float64(rep.FinishedAt.UnixMilli())/1000)
	}
}

// LastSuccess records a tenant's last success (also loaded from KV at start,
// so the gauge survives restarts).
func (m *Metrics) LastSuccess(ctx context.Context, tenant string, unixSeconds float64) {
	if m == nil {
		return
	}
	m.lastSuccess.Record(ctx, unixSeconds, metric.WithAttributes(tenantAttr(tenant)))
}

func (m *Metrics) write(ctx context.Context, tenant, target, outcome string, n int64) {
	if m == nil || n == 0 {
		return
	}
	m.writes.Add(ctx, n, metric.WithAttributes(tenantAttr(tenant), attribute.String("target", target), attribute.String("outcome", outcome)))
}

func (m *Metrics) page(ctx context.Context, tenant, path string) {
	if m == nil {
		return
	}
	m.pages.Add(ctx, 1, metric.WithAttributes(tenantAttr(tenant), attribute.String("path", path)))
}
