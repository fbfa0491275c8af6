package chartspanel

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// Records are what the charts are computed from: the project's own records,
// so they need no Prometheus.
type Records struct {
	// End is the end of the charts' last hour; the hourly charts cover the
	// 24 hours before it, the daily one the 7 days before it.
	End time.Time
	// Honours are the opt-outs received in the 24 hours (proof.Compliance).
	Honours []proof.Honour
	// DeadLetters are the times events of the tenant were dead-lettered.
	DeadLetters []time.Time
	// Runs are the tenant's run reports, any order.
	Runs []runs.Report
}

// Charts computes the panel's charts, in the order shown.
func Charts(r Records) []Chart {
	return []Chart{honourTimes(r), backlog(r), bySource(r), deadLetters(r), apiCalls(r)}
}

func hours(end time.Time) (labels []string, starts []time.Time) {
	for i := 24; i > 0; i-- {
		s := end.Add(-time.Duration(i) * time.Hour)
		labels = append(labels, s.UTC().Format("15:04"))
		starts = append(starts, s)
	}
	return labels, starts
}

// hourOf is the index of t's hour among the 24 before end (-1 outside).
func hourOf(end, t time.Time) int {
	d := end.Sub(t)
	if d <= 0 || d > 24*time.Hour {
		return -1
	}
	return 23 - int((d-time.Nanosecond)/time.Hour)
}

// honourTimes: time from unsubscribe to Salesforce, p50 and p99 of the
// opt-outs received in each hour and honoured since.
func honourTimes(r Records) Chart {
	labels, _ := hours(r.End)
	per := make([][]float64, 24)
	for _, h := range r.Honours {
		if i := hourOf(r.End, h.ReceivedAt); i >= 0 && h.Status == proof.StatusHonoured && h.How != proof.HowInSalesforce {
			per[i] = append(per[i], h.Seconds)
		}
	}
	p50, p99 := make([]float64, 24), make([]float64, 24)
	for i, v := range per {
		p50[i], p99[i] = quantile(v, 0.5), quantile(v, 0.99)
	}
	return Chart{ID: "chart-honour", Title: "Time from unsubscribe to Salesforce",
		Desc:   "Seconds from each unsubscribe to Salesforce confirming it, p50 and p99 of the opt-outs received in each hour (UTC) of the last 24 hours.",
		Labels: labels, Lines: []Series{{Name: "p50", Colour: Palette[0], Values: p50}, {Name: "p99", Colour: Palette[3], Values: p99}},
		Unit: "s", Every: 3}
}

// backlog: opt-outs received in the 24 hours not yet honoured at each
// hour's end (those received before are not counted).
func backlog(r Records) Chart {
	labels, starts := hours(r.End)
	v := make([]float64, 24)
	for i, s := range starts {
		end := s.Add(time.Hour)
		for _, h := range r.Honours {
			if h.Status == proof.StatusSuperseded || !h.ReceivedAt.Before(end) {
				continue
			}
			if h.HonouredAt.IsZero() || !h.HonouredAt.Before(end) {
				v[i]++
			}
		}
	}
	return Chart{ID: "chart-backlog", Title: "Opt-outs waiting for Salesforce",
		Desc:   "How many of the opt-outs received in the last 24 hours Salesforce had not yet confirmed at the end of each hour (UTC).",
		Labels: labels, Bars: []Series{{Name: "waiting", Colour: Palette[1], Values: v}}, Every: 3}
}

// bySource: opt-outs received per hour, stacked by source.
func bySource(r Records) Chart {
	labels, _ := hours(r.End)
	vals := map[string][]float64{}
	for _, h := range r.Honours {
		if i := hourOf(r.End, h.ReceivedAt); i >= 0 {
			src := h.Source
			if src == "" {
				src = "unknown"
			}
			if vals[src] == nil {
				vals[src] = make([]float64, 24)
			}
			vals[src][i]++
		}
	}
	names := make([]string, 0, len(vals))
	for n := range vals {
		names = append(names, n)
	}
	sort.Strings(names)
	var series []Series
	for k, n := range names {
		series = append(series, Series{Name: n, Colour: Palette[k%len(Palette)], Values: vals[n]})
	}
	return Chart{ID: "chart-sources", Title: "Opt-outs per hour by source",
		Desc:   "Opt-outs received in each hour (UTC) of the last 24 hours, by where the person unsubscribed.",
		Labels: labels, Bars: series, Every: 3}
}

// deadLetters: events dead-lettered per day over the last 7 days.
func deadLetters(r Records) Chart {
	var labels []string
	v := make([]float64, 7)
	day := r.End.UTC().Truncate(24 * time.Hour)
	if !day.Equal(r.End.UTC()) {
		day = day.Add(24 * time.Hour)
	}
	first := day.Add(-7 * 24 * time.Hour)
	for i := 0; i < 7; i++ {
		labels = append(labels, first.Add(time.Duration(i)*24*time.Hour).Format("Mon 02"))
	}
	for _, t := range r.DeadLetters {
		if i := int(t.Sub(first) / (24 * time.Hour)); !t.Before(first) && i < 7 {
			v[i]++
		}
	}
	return Chart{ID: "chart-dead-letters", Title: "Dead letters per day",
		Desc:   "Events of the tenant that could not be applied as sent and went to the dead-letter queue, per day (UTC) of the last 7 days.",
		Labels: labels, Bars: []Series{{Name: "dead-lettered", Colour: Palette[3], Values: v}}, Every: 1}
}

// apiCalls: the API requests of the last 14 runs against each run's budget.
func apiCalls(r Records) Chart {
	rs := slices.Clone(r.Runs)
	slices.SortFunc(rs, func(a, b runs.Report) int { return a.StartedAt.Compare(b.StartedAt) })
	if len(rs) > 14 {
		rs = rs[len(rs)-14:]
	}
	var labels []string
	spent, budget := make([]float64, len(rs)), make([]float64, len(rs))
	for i, x := range rs {
		labels = append(labels, x.StartedAt.UTC().Format("Jan 02"))
		spent[i], budget[i] = float64(x.API.Spent), float64(x.API.Budget)
	}
	return Chart{ID: "chart-api", Title: "API requests of the nightly runs against their budget",
		Desc:   "Salesforce API requests each of the last runs spent, and the run's share of the org's daily allowance.",
		Labels: labels, Bars: []Series{{Name: "requests", Colour: Palette[0], Values: spent}}, Lines: []Series{{Name: "budget", Colour: Palette[3], Values: budget}}, Every: 1}
}

// quantile is the nearest-rank quantile (NaN for no values: no mark).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
