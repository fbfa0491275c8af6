package cdc

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metrics are the subscriber's instruments; their names are a public
// contract (alerts use them). A nil *Metrics records nothing.
type Metrics struct {
	events  metric.Int64Counter
	applied metric.Int64Counter
	ratio   metric.Float64Gauge
	stalled metric.Int64Gauge
}

// NewMetrics registers the instruments with mp (default: the global one).
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/optout-sync/optout-sync/services/reconciler/cdc")
	out := &Metrics{}
	var err error
	// Counters are exported with the _total suffix.
	if out.events, err = m.Int64Counter("optout_cdc_events",
		metric.WithDescription("change events the tenant's Pub/Sub stream delivered (they count against the org's delivered-event allocation)")); err != nil {
		return nil, err
	}
	if out.applied, err = m.Int64Counter("optout_cdc_applied",
		metric.WithDescription("Salesforce-side changes the stream applied (ledger entries changed, write-backs made)")); err != nil {
		return nil, err
	}
	if out.ratio, err = m.Float64Gauge("optout_cdc_allocation_used_ratio",
		metric.WithDescription("share of the org's delivered-event allocation used in the rolling 24 h (0..1)")); err != nil {
		return nil, err
	}
	if out.stalled, err = m.Int64Gauge("optout_cdc_stalled",
		metric.WithDescription("1 while the tenant's stream is stalled past its watchdog or in fallback to the nightly run, else 0")); err != nil {
		return nil, err
	}
	return out, nil
}

func tenantAttr(t string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("tenant", t))
}

func (m *Metrics) delivered(ctx context.Context, tenant string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.events.Add(ctx, int64(n), tenantAttr(tenant))
}

func (m *Metrics) appliedN(ctx context.Context, tenant string, n int64) {
	if m == nil || n == 0 {
		return
	}
	m.applied.Add(ctx, n, tenantAttr(tenant))
}

func (m *Metrics) used(ctx context.Context, tenant string, r float64) {
	if m == nil {
		return
	}
	m.ratio.Record(ctx, r, tenantAttr(tenant))
}

func (m *Metrics) stall(ctx context.Context, tenant string, on bool) {
	if m == nil {
		return
	}
	v := int64(0)
	if on {
		v = 1
	}
	m.stalled.Record(ctx, v, tenantAttr(tenant))
}
