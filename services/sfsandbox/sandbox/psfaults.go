package sandbox

import "strconv"

// Pub/Sub fault knobs ("Emulator must" 16), beside the REST faults of faults.go.
const (
	// PubSubDrop ends every live Subscribe stream of the org with UNAVAILABLE
	// now; it is not kept.
	PubSubDrop = "drop"
	// PubSubUnavailable fails the next Subscribe calls (Times, 0 = until
	// cleared) with UNAVAILABLE, as during maintenance.
	PubSubUnavailable = "unavailable"
	// PubSubStall makes every stream silent (no events, no keepalive, no
	// error, no idle close) until cleared.
	PubSubStall = "stall"
	// PubSubReplayCorrupted fails the next CUSTOM subscriptions with
	// replayid.corrupted (INVALID_ARGUMENT) whatever their replay id.
	PubSubReplayCorrupted = "replayCorrupted"
	// PubSubRedeliver makes the next CUSTOM subscriptions deliver again the
	// event of the given replay id (at-least-once across reconnects).
	PubSubRedeliver = "redeliver"
)

// PubSubFault is one injected Pub/Sub misbehaviour. Retention expiry and a
// spent allocation have their own knobs (PurgeChangeEvents,
// SetEventAllocation); gap and overflow events PublishGap and PublishOverflow.
type PubSubFault struct {
	Kind string `json:"kind"`
	// Times applies the fault to that many Subscribe calls then removes it
	// (0 = until cleared); ignored by drop and stall.
	Times int `json:"times,omitempty"`
}

type psFaultState struct {
	id      string
	f       PubSubFault
	applied int
}

// ActivePubSubFault describes an injected Pub/Sub fault for listing.
type ActivePubSubFault struct {
	ID      string      `json:"id"`
	Fault   PubSubFault `json:"fault"`
	Applied int         `json:"applied"`
}

// InjectPubSubFault adds a Pub/Sub fault and returns its id ("" for drop,
// which acts at once and is not kept).
func (o *Org) InjectPubSubFault(f PubSubFault) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	switch f.Kind {
	case PubSubDrop:
		for _, s := range o.cdc.streams {
			select {
			case <-s.drop:
			default:
				close(s.drop)
			}
		}
		return "", nil
	case PubSubUnavailable, PubSubStall, PubSubReplayCorrupted, PubSubRedeliver:
	default:
		return "", errUnknownKind(f.Kind)
	}
	o.cdc.faultSeq++
	fs := &psFaultState{id: "pubsub-fault-" + strconv.Itoa(o.cdc.faultSeq), f: f}
	o.cdc.faults = append(o.cdc.faults, fs)
	o.cdc.broadcast()
	return fs.id, nil
}

type errUnknownKind string

func (e errUnknownKind) Error() string {
	return "unknown Pub/Sub fault kind " + strconv.Quote(string(e)) + " (drop, unavailable, stall, replayCorrupted, redeliver)"
}

// PubSubFaults lists the kept Pub/Sub faults.
func (o *Org) PubSubFaults() []ActivePubSubFault {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []ActivePubSubFault{}
	for _, f := range o.cdc.faults {
		out = append(out, ActivePubSubFault{ID: f.id, Fault: f.f, Applied: f.applied})
	}
	return out
}

// ClearPubSubFault removes one fault; it reports whether it was still active.
func (o *Org) ClearPubSubFault(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	for i, f := range o.cdc.faults {
		if f.id == id {
			o.cdc.faults = append(o.cdc.faults[:i], o.cdc.faults[i+1:]...)
			o.cdc.broadcast()
			return true
		}
	}
	return false
}

// ClearPubSubFaults removes every kept Pub/Sub fault (a stall ends).
func (o *Org) ClearPubSubFaults() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cdc.init()
	o.cdc.faults = nil
	o.cdc.broadcast()
}

func (o *Org) takePubSubFault(kind string) *PubSubFault {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.takePubSubFaultLocked(kind)
}

// takePubSubFaultLocked applies the first fault of kind, counting it; the
// caller holds Org.mu.
func (o *Org) takePubSubFaultLocked(kind string) *PubSubFault {
	for i, fs := range o.cdc.faults {
		if fs.f.Kind != kind {
			continue
		}
		fs.applied++
		if fs.f.Times > 0 && fs.applied >= fs.f.Times {
			o.cdc.faults = append(o.cdc.faults[:i], o.cdc.faults[i+1:]...)
		}
		f := fs.f
		return &f
	}
	return nil
}
