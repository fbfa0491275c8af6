package compliance

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

const meterName = "github.com/optout-sync/optout-sync/services/admin/compliance"

// Metric names (a public contract: the chart's PrometheusRule alerts on them).
const (
	MetricOldestSeconds      = "optout_compliance_oldest_unhonoured_seconds"
	MetricOldestBusinessDays = "optout_compliance_oldest_unhonoured_business_days"
	MetricUnhonoured         = "optout_compliance_unhonoured"
)

// Register reports the clocks on mp (the global provider when nil) at each
// collection: per tenant, how long the oldest unhonoured opt-out has waited
// in seconds and in business days (0 when none) and how many wait. Nothing
// is reported before the whole ledger is read. Every admin replica reports
// the same values: alert on max by (tenant).
func (t *Tracker) Register(mp metric.MeterProvider) error {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	age, err := m.Float64ObservableGauge(MetricOldestSeconds, metric.WithUnit("s"),
		metric.WithDescription("age of the tenant's oldest opt-out not yet honoured in Salesforce (0 when none); deadline 48 h"))
	if err != nil {
		return err
	}
	days, err := m.Float64ObservableGauge(MetricOldestBusinessDays,
		metric.WithDescription("business days (Monday to Friday, UTC) the tenant's oldest unhonoured opt-out has waited (0 when none); CAN-SPAM's deadline is 10"))
	if err != nil {
		return err
	}
	count, err := m.Int64ObservableGauge(MetricUnhonoured,
		metric.WithDescription("opt-outs of the tenant not yet honoured in Salesforce"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for tenant, c := range t.Clocks() {
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("tenant", tenant)))
			o.ObserveFloat64(age, c.AgeSeconds, attrs)
			o.ObserveFloat64(days, c.BusinessDays, attrs)
			o.ObserveInt64(count, int64(c.Unhonoured), attrs)
		}
		return nil
	}, age, days, count)
	return err
}
