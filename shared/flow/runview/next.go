package runview

import (
	"fmt"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/schedule"
	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/runs"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Next is when a tenant's next nightly run is, by the rule the reconciler
// starts runs by (schedule.NextRun).
type Next struct {
	// At is the scheduled instant (zero when none is scheduled: sync off).
	At time.Time `json:"at,omitzero"`
	// Due: the slot At has come and no run claimed it; a reconciler
	// replica starts it at its next pass.
	Due bool `json:"due"`
	// First: no run happened since sync was turned on; At is the first.
	First bool `json:"first,omitempty"`
	// Text says it in words.
	Text string `json:"text"`
}

// NextRun says when tenant s's next scheduled run is, given its newest
// claimed slot and last success (zero values when none) at now.
func NextRun(s tenant.Settings, claim runs.SlotClaim, last *runs.LastSuccess, now time.Time) Next {
	if !s.SyncEnabled {
		return Next{Text: "none: sync with Salesforce is off"}
	}
	c, err := schedule.Parse(s.ScheduleTime, s.ScheduleZone)
	if err != nil {
		return Next{Text: "none: " + err.Error()}
	}
	slot, due := schedule.NextRun(c, claim.Slot, s.SyncSince, now)
	n := Next{At: slot.UTC(), Due: due}
	n.First = !s.SyncSince.IsZero() && claim.Slot.Before(s.SyncSince) && (last == nil || last.FinishedAt.Before(s.SyncSince))
	local := fmt.Sprintf("%s %s", s.ScheduleTime, s.ScheduleZone)
	switch {
	case due:
		n.Text = fmt.Sprintf("now: the slot of %s (%s) is due and starts at the reconciler's next pass", tenantstatus.FormatTime(slot), local)
	case n.First:
		n.Text = fmt.Sprintf("%s (%s), the first since sync was turned on at %s", tenantstatus.FormatTime(slot), local, tenantstatus.FormatTime(s.SyncSince))
	default:
		n.Text = fmt.Sprintf("%s (%s)", tenantstatus.FormatTime(slot), local)
	}
	return n
}
