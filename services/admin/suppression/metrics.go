package suppression

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

const meterName = "github.com/optout-sync/optout-sync/services/admin/suppression"

// Metric names (a public contract, CHANGELOG.md). The OpenTelemetry
// Prometheus exporter adds _total to the counter:
// optout_suppression_requests_total{tenant,outcome}.
const (
	MetricIndexEntries = "optout_suppression_index_entries"
	MetricIndexLag     = "optout_suppression_index_lag_seconds"
	MetricRequests     = "optout_suppression_requests"
)

type metrics struct {
	requests metric.Int64Counter
	// sets caches one attribute set per (tenant, outcome): an answer costs
	// a map lookup, not an allocation of the set.
	sets sync.Map // [2]string → metric.MeasurementOption
}

// Register exports the index and the answers on mp (the global provider
// when nil): the persons indexed, how far the index is behind the ledger
// (before the initial read is done, the time since the service started:
// it grows until the index is built), and the answers by tenant and
// outcome (allowed, suppressed, unknown, bad_request, forbidden,
// unauthorized, not_configured). Labels never hold an address or an id;
// tenant is the token's (empty when no valid token was given), so a
// caller cannot grow the label set. Without tokens only the counter is
// reported (no index is kept).
func (a *API) Register(mp metric.MeterProvider) error {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	req, err := m.Int64Counter(MetricRequests,
		metric.WithDescription("suppression API answers, by the token's tenant and outcome"))
	if err != nil {
		return err
	}
	a.metrics = &metrics{requests: req}
	if !a.Enabled() {
		return nil
	}
	entries, err := m.Int64ObservableGauge(MetricIndexEntries,
		metric.WithDescription("persons in the suppression API's in-memory index of the ledger"))
	if err != nil {
		return err
	}
	lag, err := m.Float64ObservableGauge(MetricIndexLag, metric.WithUnit("s"),
		metric.WithDescription("how far the suppression index is behind the ledger (every change stored before now minus this is in it); before the initial read is done, the time since the service started"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(entries, int64(a.idx.Size()))
		from := a.idx.AsOf()
		if from.IsZero() {
			from = a.started
		}
		o.ObserveFloat64(lag, max(time.Since(from).Seconds(), 0))
		return nil
	}, entries, lag)
	return err
}

func (a *API) count(tenant, outcome string) {
	m := a.metrics
	if m == nil {
		return
	}
	k := [2]string{tenant, outcome}
	opt, ok := m.sets.Load(k)
	if !ok {
		opt, _ = m.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("tenant", tenant), attribute.String("outcome", outcome))))
	}
	m.requests.Add(context.Background(), 1, opt.(metric.MeasurementOption))
}
