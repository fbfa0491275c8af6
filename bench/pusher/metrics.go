package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads a Prometheus text endpoint (the pusher's /metrics).
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Uncompressed: gzip would cost the measured pusher CPU on every scrape.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// counterSum is the sum of a counter family over its label sets.
func counterSum(mf map[string]*dto.MetricFamily, name string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	var s float64
	for _, m := range f.GetMetric() {
		s += m.GetCounter().GetValue()
	}
	return s
}

// hist is a cumulative histogram: counts per upper bound, sum and count.
type hist struct {
	bounds []float64
	counts []uint64 // cumulative, per bound
	sum    float64
	count  uint64
}

// histograms returns family name's histograms keyed by the value of label.
func histograms(mf map[string]*dto.MetricFamily, name, label string) map[string]hist {
	out := map[string]hist{}
	f := mf[name]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		key := ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				key = lp.GetValue()
			}
		}
		h := m.GetHistogram()
		cur := out[key]
		if cur.bounds == nil {
			for _, b := range h.GetBucket() {
				cur.bounds = append(cur.bounds, b.GetUpperBound())
			}
			cur.counts = make([]uint64, len(cur.bounds))
		}
		for i, b := range h.GetBucket() {
			if i < len(cur.counts) {
				cur.counts[i] += b.GetCumulativeCount()
			}
		}
		cur.sum += h.GetSampleSum()
		cur.count += h.GetSampleCount()
		out[key] = cur
	}
	return out
}

// minus is what h gained since before.
func (h hist) minus(before hist) hist {
	out := hist{bounds: h.bounds, counts: slices.Clone(h.counts), sum: h.sum - before.sum, count: h.count - before.count}
	for i := range out.counts {
		if i < len(before.counts) {
			out.counts[i] -= before.counts[i]
		}
	}
	return out
}

func (h hist) mean() float64 {
	if h.count == 0 {
		return 0
	}
	return h.sum / float64(h.count)
}

// quantile interpolates linearly inside the bucket holding q.
func (h hist) quantile(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := q * float64(h.count)
	i := sort.Search(len(h.counts), func(i int) bool { return float64(h.counts[i]) >= rank })
	if i >= len(h.bounds) {
		return math.Inf(1)
	}
	lo, below := 0.0, uint64(0)
	if i > 0 {
		lo, below = h.bounds[i-1], h.counts[i-1]
	}
	in := h.counts[i] - below
	if in == 0 {
		return h.bounds[i]
	}
	return lo + (h.bounds[i]-lo)*(rank-float64(below))/float64(in)
}
