package optout

import "time"

// A Step is one transition as a store applies it: to the entry as stored
// (the zero Entry when none is, At.Exists false), inside the store's
// compare-and-set loop, so it may be called more than once and must be
// pure apart from what it returns (and its out-parameters, set on every
// call). It reports whether the entry changed.
type Step func(e Entry, at At) (Entry, bool)

// At is what a store tells a step about the entry it applies to.
type At struct {
	Tenant, Field string
	// Exists: an entry is stored.
	Exists bool
	// Current: the entry is still at the revision the writer based its
	// step on (always, when the writer based it on none).
	Current bool
	// Now is the store's clock, for the stamps a step makes.
	Now time.Time
}

// FoldStep folds an event (Fold); res receives what the fold did.
func FoldStep(in EventInput, res *FoldResult) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists {
			e = Entry{Tenant: at.Tenant}
		}
		next, r := Fold(e, at.Exists, in, at.Field)
		*res = r
		return next, r.Changed
	}
}

// MergeStep folds another entry of the same person into this one (Merge),
// creating it when absent.
func MergeStep(from Entry) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists {
			e = Entry{Tenant: from.Tenant}
		}
		next, changed := Merge(e, from, at.Field)
		return next, changed || !at.Exists
	}
}

// WroteStep records a write of Salesforce (Wrote); whether it was based on
// the entry's current revision is the store's to say.
func WroteStep(w Write) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists {
			return e, false
		}
		w := w
		w.Current = at.Current
		return Wrote(e, w, at.Field)
	}
}

// AttemptStep records a write before it is made and takes its claim
// (Attempt); held receives another writer's claim that keeps it off. An
// entry moved since the writer read it is left alone.
func AttemptStep(w Write, held **Claim) Step {
	return func(e Entry, at At) (Entry, bool) {
		*held = nil
		if !at.Exists || !at.Current {
			return e, false
		}
		next, changed, h := Attempt(e, w, at.Field)
		*held = h
		return next, changed
	}
}

// ObservedStep records a value read from Salesforce (Observed), unless the
// entry moved since the writer read it.
func ObservedStep(salesforceID, f string, value bool) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists || !at.Current {
			return e, false
		}
		return Observed(e, salesforceID, f, value, at.Now, at.Field)
	}
}

// FailedStep records a failed write (Failed); out receives what the caller
// must do. A person moved to another record meanwhile only sees the failed
// write's claim end.
func FailedStep(f Failure, out *FailOutcome) Step {
	return func(e Entry, at At) (Entry, bool) {
		*out = FailOutcome{}
		if !at.Exists {
			return e, false
		}
		if e.SalesforceID != f.Write.SalesforceID {
			return Release(e, f.Write.Claim)
		}
		next, o := Failed(e, f, at.Field)
		*out = o
		return next, true
	}
}

// ConversionStep points the person at the Contact its Lead became
// (ConversionFollowed).
func ConversionStep(leadID, contactID string) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists {
			return e, false
		}
		return ConversionFollowed(e, leadID, contactID, at.Field)
	}
}

// LearntStep folds what the nightly reconcile learnt from Salesforce
// (Learnt), creating the person when absent.
func LearntStep(o Observation) Step {
	return func(e Entry, at At) (Entry, bool) {
		if !at.Exists {
			e = Entry{Tenant: at.Tenant}
		}
		return Learnt(e, at.Exists, o, at.Field)
	}
}
