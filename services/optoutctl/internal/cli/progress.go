package cli

import (
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is a bar on stderr for a long export or replay. It is drawn only
// for a person watching: stdout and stderr both terminals, and the output
// not JSON, so scripts and files never see it. A nil *Progress draws
// nothing.
type Progress struct{ bar *progressbar.ProgressBar }

// ProgressEvery is the least time between two redraws of a bar.
var ProgressEvery = 100 * time.Millisecond

// Progress starts a bar counting to total things (total < 0: not known
// ahead, so a count and a rate), or returns nil when no bar is wanted.
func (inv *Invocation) Progress(total int64, what, unit string) *Progress {
	if !inv.StdoutTerminal || !inv.StderrTerminal || inv.Output == FormatJSON {
		return nil
	}
	return &Progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(inv.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(ProgressEvery),
		progressbar.OptionClearOnFinish(),
		// Shown from the start, so a slow first step is seen to be under way.
		progressbar.OptionSetRenderBlankState(true),
		// Redrawn only by Add: the library's own redraw goroutine would write
		// after the command has returned.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)}
}

// Add counts n more done.
func (p *Progress) Add(n int) {
	if p != nil {
		_ = p.bar.Add(n)
	}
}

// Done removes the bar, leaving the line to what follows (the output, or
// the error).
func (p *Progress) Done() {
	if p != nil {
		_ = p.bar.Finish()
	}
}
