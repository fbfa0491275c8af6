package chartspanel_test

import (
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/admin/page/chartspanel"
	"github.com/optout-sync/optout-sync/shared/flow/proof"
	"github.com/optout-sync/optout-sync/shared/store/runs"
)

var end = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func honoured(at time.Time, secs float64, src string) proof.Honour {
	return proof.Honour{ReceivedAt: at, RequestedAt: at, HonouredAt: at.Add(time.Duration(secs * float64(time.Second))), Seconds: secs,
		Status: proof.StatusHonoured, How: proof.HowPushed, Source: src}
}

func TestChartsAreComputedFromTheRecords(t *testing.T) {
	last := end.Add(-30 * time.Minute) // in the last hour (11:00)
	r := chartspanel.Records{End: end, Honours: []proof.Honour{
		honoured(last, 1, "EMAIL_LINK"), honoured(last, 2, "EMAIL_LINK"), honoured(last, 10, "SALES_USER"),
		{ReceivedAt: end.Add(-150 * time.Minute), RequestedAt: end.Add(-150 * time.Minute), Status: proof.StatusPending, Source: "EMAIL_LINK"},
		{ReceivedAt: end.Add(-150 * time.Minute), Status: proof.StatusSuperseded, Source: "EMAIL_LINK"},
	},
		DeadLetters: []time.Time{end.Add(-time.Hour), end.Add(-time.Hour), end.Add(-50 * time.Hour), end.Add(-30 * 24 * time.Hour)},
		Runs: []runs.Report{{StartedAt: end.Add(-48 * time.Hour), API: runs.API{Spent: 40, Budget: 100}},
			{StartedAt: end.Add(-24 * time.Hour), API: runs.API{Spent: 90, Budget: 100}}},
	}
	c := chartspanel.Charts(r)
	byID := map[string]chartspanel.Chart{}
	for _, x := range c {
		byID[x.ID] = x
	}
	h := byID["chart-honour"]
	if len(h.Labels) != 24 || h.Labels[23] != "11:00" || h.Lines[0].Values[23] != 2 || h.Lines[1].Values[23] != 10 || !math.IsNaN(h.Lines[0].Values[0]) {
		t.Errorf("time to honour: labels %v, p50 %v, p99 %v", h.Labels, h.Lines[0].Values, h.Lines[1].Values)
	}
	// The pending one waits from 09:30 to now; the superseded one never counts.
	b := byID["chart-backlog"].Bars[0].Values
	if b[20] != 0 || b[21] != 1 || b[22] != 1 || b[23] != 1 {
		t.Errorf("backlog %v; want 1 from the 09:00 hour on", b)
	}
	s := byID["chart-sources"]
	if len(s.Bars) != 2 || s.Bars[0].Name != "EMAIL_LINK" || s.Bars[0].Values[23] != 2 || s.Bars[0].Values[21] != 2 || s.Bars[1].Values[23] != 1 {
		t.Errorf("sources %+v", s.Bars)
	}
	d := byID["chart-dead-letters"]
	if len(d.Labels) != 7 || d.Bars[0].Values[6] != 2 || d.Bars[0].Values[4] != 1 || sum(d.Bars[0].Values) != 3 {
		t.Errorf("dead letters %v %v; want 2 today, 1 two days ago, none older than 7 days", d.Labels, d.Bars[0].Values)
	}
	a := byID["chart-api"]
	if len(a.Labels) != 2 || a.Bars[0].Values[1] != 90 || a.Lines[0].Values[1] != 100 {
		t.Errorf("api %v %v %v", a.Labels, a.Bars[0].Values, a.Lines[0].Values)
	}
}

func TestSVGHasAMarkPerValueAndNoScriptOrStyle(t *testing.T) {
	c := chartspanel.Chart{ID: "x", Title: "T <&>", Desc: "d", Labels: []string{"a", "b", "c"},
		Bars:  []chartspanel.Series{{Name: "one", Values: []float64{1, 0, 3}}, {Name: "two", Values: []float64{2, 2, 2}}},
		Lines: []chartspanel.Series{{Name: "limit", Values: []float64{5, 5, math.NaN()}}}}
	svg := string(c.SVG())
	if n := strings.Count(svg, `class="bar"`); n != 5 {
		t.Errorf("%d bars; want 5 (a zero draws none)", n)
	}
	if n := strings.Count(svg, `class="point"`); n != 2 || !strings.Contains(svg, `class="line"`) {
		t.Errorf("%d points; want 2 and their line", n)
	}
	if strings.Contains(svg, "<script") || regexp.MustCompile(`\sstyle=`).MatchString(svg) || strings.Contains(svg, "T <&>") {
		t.Errorf("svg has a script, a style attribute or unescaped text:\n%s", svg)
	}
	if !strings.Contains(svg, `role="img"`) || !strings.Contains(svg, `<title id="x-t">T &lt;&amp;&gt;</title>`) {
		t.Errorf("svg is not labelled for screen readers:\n%s", svg)
	}
	empty := string(chartspanel.Chart{ID: "e", Title: "E"}.SVG())
	if !strings.Contains(empty, "Nothing in this period") {
		t.Errorf("an empty chart says nothing:\n%s", empty)
	}
}

func sum(v []float64) (s float64) {
	for _, x := range v {
		s += x
	}
	return s
}
