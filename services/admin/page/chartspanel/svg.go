package chartspanel

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// A chart is drawn on the server as inline SVG: no script, no style
// attribute (the page's Content-Security-Policy allows neither), colours as
// presentation attributes. Every chart has a title and a description for
// screen readers, and the numbers as <title> tooltips on its marks.

// Series is one named row of values, one per label.
type Series struct {
	Name   string
	Colour string
	Values []float64
}

// Chart is a bar chart (stacked when it has several series) with an
// optional line series drawn over it.
type Chart struct {
	ID, Title, Desc string
	Labels          []string // x axis, one per value
	Bars            []Series // stacked
	Lines           []Series // drawn over the bars
	Unit            string   // appended to the axis's top value
	// Every labels only every n-th x label (n ≥ 1), so 24 hours fit.
	Every int
}

const (
	width, height        = 640, 220
	left, right, top, bt = 56, 12, 14, 38
	plotW, plotH         = width - left - right, height - top - bt
)

// Palette: distinguishable colours that also hold on grey.
var Palette = []string{"#1d4e89", "#f4a259", "#5b8e7d", "#bc4b51", "#8cb369", "#7d5ba6"}

// SVG renders the chart. Empty data renders an axis and a note, never an
// error: a quiet tenant is not a broken page.
func (c Chart) SVG() template.HTML {
	n := len(c.Labels)
	maxV := 0.0
	for i := 0; i < n; i++ {
		sum := 0.0
		for _, s := range c.Bars {
			sum += at(s.Values, i)
		}
		maxV = math.Max(maxV, sum)
		for _, s := range c.Lines {
			maxV = math.Max(maxV, at(s.Values, i))
		}
	}
	ceil := niceCeil(maxV)
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg class="chart" id="%s" role="img" aria-labelledby="%s-t %s-d" viewBox="0 0 %d %d" width="100%%" xmlns="http://www.w3.org/2000/svg">`,
		esc(c.ID), esc(c.ID), esc(c.ID), width, height)
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s</desc>`, esc(c.ID), esc(c.Title), esc(c.ID), esc(c.Desc))
	// Axes and the grid: 0, half and top.
	for _, f := range []float64{0, 0.5, 1} {
		y := float64(top) + float64(plotH)*(1-f)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d0d4da" stroke-width="1"/>`, left, y, width-right, y)
		label := formatValue(ceil * f)
		if f == 1 && c.Unit != "" {
			label += " " + c.Unit
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end" fill="#3b4552">%s</text>`, left-6, y+4, esc(label))
	}
	if n == 0 || maxV == 0 {
		fmt.Fprintf(&b, `<text class="empty" x="%d" y="%d" font-size="13" text-anchor="middle" fill="#3b4552">Nothing in this period</text>`, left+plotW/2, top+plotH/2)
	}
	slot := float64(plotW) / math.Max(1, float64(n))
	barW := math.Max(1, slot*0.7)
	every := max(1, c.Every)
	for i := 0; i < n; i++ {
		x := float64(left) + slot*float64(i)
		base := float64(top + plotH)
		for k, s := range c.Bars {
			v := at(s.Values, i)
			if v <= 0 {
				continue
			}
			h := float64(plotH) * v / ceil
			base -= h
			fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %s</title></rect>`,
				x+(slot-barW)/2, base, barW, h, colour(s, k), esc(c.Labels[i]), esc(s.Name), esc(formatValue(v)))
		}
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#3b4552">%s</text>`, x+slot/2, height-bt+16, esc(c.Labels[i]))
		}
	}
	for k, s := range c.Lines {
		var pts []string
		for i := 0; i < n; i++ {
			if i >= len(s.Values) || math.IsNaN(s.Values[i]) {
				continue
			}
			x := float64(left) + slot*float64(i) + slot/2
			y := float64(top) + float64(plotH)*(1-s.Values[i]/ceil)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			fmt.Fprintf(&b, `<circle class="point" cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s, %s: %s</title></circle>`,
				x, y, colour(s, len(c.Bars)+k), esc(c.Labels[i]), esc(s.Name), esc(formatValue(s.Values[i])))
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline class="line" points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), colour(s, len(c.Bars)+k))
		}
	}
	// The legend, under the axis labels.
	x := left
	for k, s := range append(append([]Series{}, c.Bars...), c.Lines...) {
		fmt.Fprintf(&b, `<rect class="key" x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11" fill="#3b4552">%s</text>`,
			x, height-12, colour(s, k), x+14, height-3, esc(s.Name))
		x += 24 + 7*len(s.Name)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func at(v []float64, i int) float64 {
	if i < len(v) && !math.IsNaN(v[i]) {
		return v[i]
	}
	return 0
}

func colour(s Series, k int) string {
	if s.Colour != "" {
		return s.Colour
	}
	return Palette[k%len(Palette)]
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten, so the axis reads well.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func formatValue(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
