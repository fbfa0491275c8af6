package push

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Metrics are the pusher's instruments. Labels carry the tenant id and
// classes, never person ids or emails.
type Metrics struct {
	pushedC   metric.Int64Counter
	parkedC   metric.Int64Counter
	dlqC      metric.Int64Counter
	dlqLostC  metric.Int64Counter
	horizonC  metric.Int64Counter
	callsC    metric.Int64Counter
	latency   metric.Float64Histogram
	modeGauge metric.Int64Gauge
	clampedC  metric.Int64Counter
	stageH    metric.Float64Histogram

	// Totals for progress displays (the demo) without a metrics backend.
	Pushed, Parked, DeadLettered, Calls, Clamped atomic.Int64
	mu                                           sync.Mutex
	latencies                                    []time.Duration
}

// NewMetrics registers the instruments on mp (the global provider when nil).
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(tracerName)
	var err error
	out := &Metrics{}
	if out.pushedC, err = m.Int64Counter("optout_pushed", metric.WithDescription("opt-outs confirmed by Salesforce")); err != nil {
		return nil, err
	}
	if out.parkedC, err = m.Int64Counter("optout_parked", metric.WithDescription("opt-outs parked without a Salesforce id")); err != nil {
		return nil, err
	}
	if out.dlqC, err = m.Int64Counter("optout_dead_lettered", metric.WithDescription("events copied to the DLQ, by class")); err != nil {
		return nil, err
	}
	if out.dlqLostC, err = m.Int64Counter("optout_dead_letter_unwritable",
		metric.WithDescription("dead letters whose DLQ copy could not be written after every attempt, by class: alert on any "+
			"(an invalid event is then only in the events stream, termed; a failed person only in the ledger)")); err != nil {
		return nil, err
	}
	if out.horizonC, err = m.Int64Counter("optout_retry_horizon_exceeded",
		metric.WithDescription("events dead-lettered after retrying past the horizon: alert on any")); err != nil {
		return nil, err
	}
	if out.callsC, err = m.Int64Counter("optout_salesforce_calls", metric.WithDescription("Salesforce write calls made by the pusher")); err != nil {
		return nil, err
	}
	if out.latency, err = m.Float64Histogram("optout_push_latency_seconds",
		metric.WithDescription("from the unsubscribe (occurred_at) to Salesforce's confirmation"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)); err != nil {
		return nil, err
	}
	if out.modeGauge, err = m.Int64Gauge("optout_tenant_healthy", metric.WithDescription("1 when the tenant pushes normally, 0 when paused, backing off or unhealthy")); err != nil {
		return nil, err
	}
	if out.clampedC, err = m.Int64Counter("optout_future_stamp_clamped",
		metric.WithDescription("events whose occurred_at was later than JetStream stored them, ordered by the storage time")); err != nil {
		return nil, err
	}
	if out.stageH, err = m.Float64Histogram("optout_push_stage_seconds",
		metric.WithDescription("where an opt-out's time goes inside the pusher, by stage (see push.Stage*) and target field (email, sales)"),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(stageBuckets...)); err != nil {
		return nil, err
	}
	return out, nil
}

// Stages of an opt-out through the pusher, for the latency breakdown (the
// optout_push_stage_seconds histogram). Per-event stages are observed once
// per opt-out, per-batch stages once per batch.
const (
	// StageArrive: from occurredAt to the pusher holding the message (the
	// publisher and the broker; upstream delays in production).
	StageArrive = "arrive"
	// StageFold: decoding and folding the event into the ledger, until it
	// is acked, or held for its push (per event).
	StageFold = "fold"
	// StageQueue: from queued dirty to taken into a batch, linger included
	// (per person).
	StageQueue = "queue"
	// StageSlot: waiting for a worker slot (per batch).
	StageSlot = "slot"
	// StageRead: reading the batch's persons from the ledger (per batch).
	StageRead = "read"
	// StageSalesforceWrite: the Salesforce call (per call): the sObject
	// Collections update, or for the sales field the /composite that reads
	// the field and writes it (there is no separate read any more).
	StageSalesforceWrite = "salesforce_write"
	// StageConfirm: recording the confirmation by compare-and-set, dirty
	// set included (per person).
	StageConfirm = "confirm"
)

// stageBuckets resolve the tens of milliseconds a real-time opt-out is
// judged by, and still show a seconds-long backlog.
var stageBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
	0.075, 0.1, 0.11, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5, 10, 30, 60}

// stage observes d for one stage; target is "email" (Email Opt Out) or
// "sales" (the sales opt-out field).
func (m *Metrics) stage(name, target string, d time.Duration) {
	m.stageH.Record(context.Background(), max(d, 0).Seconds(), stageAttrs(name, target))
}

// stageAttrSets holds one attribute set per stage and target: a few
// observations per opt-out need not build and sort the set each time.
var stageAttrSets sync.Map // [2]string -> metric.MeasurementOption

func stageAttrs(name, target string) metric.MeasurementOption {
	k := [2]string{name, target}
	if o, ok := stageAttrSets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String("stage", name), attribute.String("target", target)))
	stageAttrSets.Store(k, o)
	return o
}

// tenantAttrSets caches each tenant's attribute set (observed per opt-out).
var tenantAttrSets sync.Map // string -> metric.MeasurementOption

func tenantAttr(t string) metric.MeasurementOption {
	if o, ok := tenantAttrSets.Load(t); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String("tenant", t)))
	tenantAttrSets.Store(t, o)
	return o
}

func (m *Metrics) pushed(t string, latency time.Duration) {
	m.Pushed.Add(1)
	m.pushedC.Add(context.Background(), 1, tenantAttr(t))
	m.latency.Record(context.Background(), latency.Seconds(), tenantAttr(t))
	m.mu.Lock()
	if len(m.latencies) < 1_000_000 {
		m.latencies = append(m.latencies, latency)
	}
	m.mu.Unlock()
}

func (m *Metrics) parked(t string) {
	m.Parked.Add(1)
	m.parkedC.Add(context.Background(), 1, tenantAttr(t))
}

func (m *Metrics) deadLettered(t, class string) {
	m.DeadLettered.Add(1)
	m.dlqC.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", t), attribute.String("class", class)))
}

func (m *Metrics) deadLetterUnwritable(t, class string) {
	m.dlqLostC.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", t), attribute.String("class", class)))
}

func (m *Metrics) horizonExceeded(t string) { m.horizonC.Add(context.Background(), 1, tenantAttr(t)) }

func (m *Metrics) call(t string) {
	m.Calls.Add(1)
	m.callsC.Add(context.Background(), 1, tenantAttr(t))
}

func (m *Metrics) tenantMode(t string, mode tenant.Mode) {
	v := int64(0)
	if mode == tenant.ModeHealthy {
		v = 1
	}
	m.modeGauge.Record(context.Background(), v, tenantAttr(t))
}

// Latencies returns a copy of the recorded publish-to-confirmed latencies.
func (m *Metrics) Latencies() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.latencies...)
}

func (m *Metrics) clamped(t string) {
	m.Clamped.Add(1)
	m.clampedC.Add(context.Background(), 1, tenantAttr(t))
}
