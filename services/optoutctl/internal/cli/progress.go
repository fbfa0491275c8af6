package cli

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is a bar on stderr for a long export or replay. It is drawn only
// for a person watching: stdout and stderr both terminals, and the output
// not JSON, so scripts and files never see it. A nil *Progress draws
// nothing.
type Progress struct {
	bar *progressbar.ProgressBar
	// drawn: the bar is on the screen (written since the last clear).
	drawn bool
	// pending counts not shown yet; last is when the bar was last drawn
	// (at most every ProgressEvery, unless output wiped it).
	pending int
	last    time.Time
}

// ProgressEvery is the least time between two redraws of a bar.
var ProgressEvery = 100 * time.Millisecond

// Progress starts a bar counting to total things (total < 0: not known
// ahead, so a count and a rate), or returns nil when no bar is wanted.
func (inv *Invocation) Progress(total int64, what, unit string) *Progress {
	if !inv.StdoutTerminal || !inv.StderrTerminal || inv.Output == FormatJSON {
		return nil
	}
	p := &Progress{}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(marking{p, inv.Stderr}),
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
		// Shown from the start, so a slow first step is seen to be under way.
		progressbar.OptionSetRenderBlankState(true),
		// Redrawn only by Add: the library's own redraw goroutine would write
		// after the command has returned.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)
	return p
}

// Add counts n more done.
func (p *Progress) Add(n int) {
	if p == nil {
		return
	}
	p.pending += n
	if time.Since(p.last) >= ProgressEvery {
		p.draw()
	}
}

func (p *Progress) draw() {
	_ = p.bar.Add(p.pending)
	p.pending, p.last = 0, time.Now()
}

// Done removes the bar, leaving the line to what follows (the output, or
// the error).
func (p *Progress) Done() {
	if p != nil {
		_ = p.bar.Add(p.pending)
		_ = p.bar.Finish()
	}
}

// Above returns w, the command's output on the same terminal, made to clear
// the bar before each write and draw it again below a write that ends a
// line: output written a whole line at a time scrolls above the bar rather
// than through it.
func (p *Progress) Above(w io.Writer) io.Writer {
	if p == nil {
		return w
	}
	return clearing{p, w}
}

type clearing struct {
	p *Progress
	w io.Writer
}

func (c clearing) Write(b []byte) (int, error) {
	was := c.p.drawn
	if was {
		_ = c.p.bar.Clear()
		c.p.drawn = false
	}
	n, err := c.w.Write(b)
	if was && err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
		c.p.draw()
	}
	return n, err
}

// marking is the bar's writer: it notes that the bar is on the screen.
type marking struct {
	p *Progress
	w io.Writer
}

func (m marking) Write(b []byte) (int, error) {
	m.p.drawn = true
	return m.w.Write(b)
}
