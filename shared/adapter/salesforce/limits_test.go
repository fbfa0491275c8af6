package salesforce

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestParseLimitInfo(t *testing.T) {
	cases := []struct {
		in        string
		used, max int64
		ok        bool
	}{
		{"api-usage=10018/100000", 10018, 100000, true},
		{"api-usage=10018/100000; api-bursts=1/750", 10018, 100000, true},
		{"api-bursts=1/750;api-usage=5/15000", 5, 15000, true},
		{"per-app-api-usage=17/250(appName=x), api-usage=18/15000", 18, 15000, true},
		{" API-USAGE = 7 / 9 ", 7, 9, true},
		{"api-usage=abc/100", 0, 0, false},
		{"api-usage=", 0, 0, false},
		{"", 0, 0, false},
		{"garbage", 0, 0, false},
	}
	for _, c := range cases {
		u, m, ok := ParseLimitInfo(c.in)
		assert.Equal(t, c.ok, ok, c.in)
		assert.Equal(t, c.used, u, c.in)
		assert.Equal(t, c.max, m, c.in)
	}
}

func TestLimitsAndUsageTracking(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, func(c *Config) { c.Org = "tenant-42" })
	ctx := ctxT(t)

	_, ok := c.LastAPIUsage()
	assert.False(t, ok)
	limits, err := c.Limits(ctx)
	require.NoError(t, err)
	daily := limits["DailyApiRequests"]
	assert.Equal(t, int64(100000), daily.Max)

	u, ok := c.LastAPIUsage()
	require.True(t, ok)
	assert.Equal(t, int64(100000), u.Max)
	assert.Equal(t, int64(e.org.APICalls()), u.Used, "Sforce-Limit-Info matches the emulator's counter")

	// Exhaust the allocation: the usage follows, and the next call is Quota.
	e.org.SetAPIUsage(100000)
	_, err = c.Describe(ctx, "Contact")
	se := errOf(t, err)
	assert.Equal(t, Quota, se.Class, "%v", err)
	assert.Equal(t, "REQUEST_LIMIT_EXCEEDED", se.Code)
	u, _ = c.LastAPIUsage()
	assert.GreaterOrEqual(t, u.Used, int64(100000), "usage is read from error responses too")

	// Metrics: the call counter and the usage gauges, labelled by org.
	var rm metricdata.ResourceMetrics
	require.NoError(t, e.metrics.Collect(context.Background(), &rm))
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "salesforce.api.calls" {
					var total int64
					for _, p := range d.DataPoints {
						org, _ := p.Attributes.Value("salesforce.org")
						assert.Equal(t, "tenant-42", org.AsString())
						total += p.Value
					}
					assert.Equal(t, c.APICalls(), total)
					found[m.Name] = true
				}
			case metricdata.Gauge[int64]:
				if m.Name == "salesforce.api.usage.used" || m.Name == "salesforce.api.usage.max" {
					require.Len(t, d.DataPoints, 1)
					org, _ := d.DataPoints[0].Attributes.Value("salesforce.org")
					assert.Equal(t, "tenant-42", org.AsString())
					found[m.Name] = true
				}
			}
		}
	}
	assert.True(t, found["salesforce.api.calls"] && found["salesforce.api.usage.used"] && found["salesforce.api.usage.max"], "%v", found)
	assert.Equal(t, int64(2), c.APICalls())
}
