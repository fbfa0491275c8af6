package salesforce

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// APIUsage is the org's daily API allocation as last reported in a
// Sforce-Limit-Info header.
type APIUsage struct {
	Used, Max int64
	At        time.Time
}

// LastAPIUsage returns the most recent api-usage seen on any response, and
// false before the first one.
func (c *Client) LastAPIUsage() (APIUsage, bool) {
	if u := c.usage.Load(); u != nil {
		return *u, true
	}
	return APIUsage{}, false
}

// ParseLimitInfo reads the api-usage item of a Sforce-Limit-Info header,
// e.g. "api-usage=10018/100000; api-bursts=1/750; per-app-api-usage=17/250(appName=x)".
// Unknown items and malformed parts are ignored.
func ParseLimitInfo(h string) (used, max int64, ok bool) {
	for _, item := range strings.FieldsFunc(h, func(r rune) bool { return r == ';' || r == ',' }) {
		k, v, found := strings.Cut(strings.TrimSpace(item), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(k), "api-usage") {
			continue
		}
		if i := strings.IndexByte(v, '('); i >= 0 {
			v = v[:i]
		}
		a, b, found := strings.Cut(strings.TrimSpace(v), "/")
		if !found {
			continue
		}
		u, err1 := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
		m, err2 := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
		if err1 != nil || err2 != nil || u < 0 || m < 0 {
			continue
		}
		return u, m, true
	}
	return 0, 0, false
}

func (c *Client) observeLimitInfo(ctx context.Context, sess *session, h string) {
	if h == "" {
		return
	}
	used, max, ok := ParseLimitInfo(h)
	if !ok {
		return
	}
	c.usage.Store(&APIUsage{Used: used, Max: max, At: time.Now()})
	c.tel.recordUsage(ctx, c.orgLabel(sess), used, max)
}

func (c *Client) orgLabel(sess *session) string {
	switch {
	case c.s.org != "":
		return c.s.org
	case sess != nil && sess.orgID != "":
		return sess.orgID
	}
	return "unknown"
}

// Limit is one entry of GET /limits.
type Limit struct {
	Max       int64 `json:"Max"`
	Remaining int64 `json:"Remaining"`
}

// Limits returns GET /limits (DailyApiRequests, DailyBulkV2QueryJobs, ...).
// Entries without Max/Remaining are skipped.
func (c *Client) Limits(ctx context.Context) (map[string]Limit, error) {
	var raw map[string]json.RawMessage
	if err := c.doJSON(ctx, &call{op: "limits", method: "GET", route: "/limits", path: "/limits"}, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]Limit, len(raw))
	for k, v := range raw {
		var l struct {
			Max, Remaining *int64
		}
		if json.Unmarshal(v, &l) == nil && l.Max != nil && l.Remaining != nil {
			out[k] = Limit{Max: *l.Max, Remaining: *l.Remaining}
		}
	}
	return out, nil
}

// telemetry holds this package's metric instruments.
type telemetry struct {
	calls metric.Int64Counter
	used  metric.Int64Gauge
	max   metric.Int64Gauge
}

const meterName = "github.com/optout-sync/optout-sync/shared/adapter/salesforce"

func newTelemetry(mp metric.MeterProvider) (*telemetry, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	var t telemetry
	var err error
	if t.calls, err = m.Int64Counter("salesforce.api.calls",
		metric.WithDescription("REST and Bulk API requests sent, by org and route template"),
		metric.WithUnit("{call}")); err != nil {
		return nil, err
	}
	if t.used, err = m.Int64Gauge("salesforce.api.usage.used",
		metric.WithDescription("Daily API requests used, from Sforce-Limit-Info"),
		metric.WithUnit("{call}")); err != nil {
		return nil, err
	}
	if t.max, err = m.Int64Gauge("salesforce.api.usage.max",
		metric.WithDescription("Daily API request allocation, from Sforce-Limit-Info"),
		metric.WithUnit("{call}")); err != nil {
		return nil, err
	}
	return &t, nil
}

func (t *telemetry) countCall(ctx context.Context, org, route string) {
	t.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("salesforce.org", org), attribute.String("salesforce.route", route)))
}

func (t *telemetry) recordUsage(ctx context.Context, org string, used, max int64) {
	attrs := metric.WithAttributes(attribute.String("salesforce.org", org))
	t.used.Record(ctx, used, attrs)
	t.max.Record(ctx, max, attrs)
}
