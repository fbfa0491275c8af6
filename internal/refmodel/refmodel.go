// Package refmodel is the reference model the model tests compare the
// system with (the ledger's rapid model test, `make chaos` and the cluster
// test): the rules of issue 10 as the ledger documents them (Entry.Target,
// WantsStandard), written once and apart from the code they check, so a
// test cannot agree with the ledger by sharing its mistake. It imports
// nothing of ours.
//
//   - A person's wish is their newest event by ordering time, an opt-out
//     winning a tie, whatever order the events arrived in.
//   - The sales opt-out field ends at that wish.
//   - Email Opt Out (the standard field) is true once any opt-out of the
//     person is known, and never cleared from here.
package refmodel

import "time"

// Event is one event of a person's history as the model sees it.
type Event struct {
	At     time.Time // its ordering time
	OptOut bool      // an opt-out; else a resubscribe
}

// Wish is what a person's history decides.
type Wish struct {
	Known     bool      // the history has an event
	OptOut    bool      // the newest wish
	DecidedAt time.Time // its ordering time
	// AnyOptOut: an opt-out is among the events; LastOptOutAt is the
	// newest one's ordering time (zero when none).
	AnyOptOut    bool
	LastOptOutAt time.Time
}

// Of is the wish of a history, in any order.
func Of(evs []Event) Wish {
	var w Wish
	for _, e := range evs {
		if !w.Known || e.At.After(w.DecidedAt) || (e.At.Equal(w.DecidedAt) && e.OptOut && !w.OptOut) {
			w.Known, w.OptOut, w.DecidedAt = true, e.OptOut, e.At
		}
		if e.OptOut {
			if !w.AnyOptOut || e.At.After(w.LastOptOutAt) {
				w.LastOptOutAt = e.At
			}
			w.AnyOptOut = true
		}
	}
	return w
}

// Salesforce is the value the person's record must end at on the field its
// tenant syncs: on Email Opt Out (standard) true once any opt-out is known;
// on the sales field the wish.
func (w Wish) Salesforce(standard bool) bool {
	if standard {
		return w.AnyOptOut
	}
	return w.OptOut
}
