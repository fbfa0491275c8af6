package tenantstatus

import (
	"fmt"
	"time"

	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// CDCLines say, in words an admin reads, how a tenant's Change Data Capture
// stream stands: streaming, stalled or fallen back to the nightly run and
// why, the events delivered against the org's allocation, and the last
// reconcile it asked for. optoutctl and the admin page both show them.
func CDCLines(c *runs.CDC, now time.Time) []string {
	if c == nil {
		return []string{"Near real time (Change Data Capture): not subscribed; Salesforce-side changes come with the nightly run."}
	}
	var out []string
	switch c.State {
	case runs.CDCStreaming:
		out = append(out, "Near real time (Change Data Capture): streaming "+c.Topic+" since "+FormatTime(c.Since)+".")
	case runs.CDCStalled:
		out = append(out, "Near real time (Change Data Capture): stalled since "+FormatTime(c.Since)+": "+c.Reason+".")
	case runs.CDCFallback:
		s := "Near real time (Change Data Capture): off since " + FormatTime(c.Since) + ": " + c.Reason + "."
		if !c.Until.IsZero() {
			s += " Next attempt " + FormatTime(c.Until) + "."
		}
		out = append(out, s)
	default:
		out = append(out, "Near real time (Change Data Capture): starting.")
	}
	used := c.Delivered24h(now)
	if c.Allocation > 0 {
		out = append(out, fmt.Sprintf("Events delivered to this tenant in the last 24 h: %d; the org has used %.0f%% of its allocation of %d a day.", used, c.UsedRatio*100, c.Allocation))
	} else {
		out = append(out, fmt.Sprintf("Events delivered to this tenant in the last 24 h: %d.", used))
	}
	if !c.LastAt.IsZero() {
		out = append(out, fmt.Sprintf("Changes applied from the stream: %d; last event %s.", c.Applied, FormatTime(c.LastAt)))
	}
	if r := c.Reconcile; r != nil {
		s := "Reconcile asked for " + FormatTime(r.At) + ": " + r.Reason + "."
		switch {
		case r.RunID != "" && r.Refused == "":
			s += " Run " + r.RunID + " started."
		case r.Refused != "":
			s += " Not started: " + r.Refused + "."
		}
		out = append(out, s)
	}
	return out
}
