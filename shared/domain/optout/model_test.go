package optout_test

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/optout-sync/optout-sync/internal/refmodel"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// A model-based test of the pure transitions: one person's random history
// of opt-outs and resubscribes (ties, future stamps, duplicates, replays),
// delivered in random order and interleaved with push rounds of two
// replicas against a simulated Salesforce (writes that land or not, are
// confirmed, fail, or are confirmed on a stale revision; reads of
// Salesforce's value; replicas that die mid-call, their write landed or
// not, and never report). After the history and clean push rounds, Salesforce
// and the entry must be what the reference model says, whatever the order.

// reference is the shared reference model (internal/refmodel) of the
// events' history.
func reference(evs []optout.EventInput) refmodel.Wish {
	hist := make([]refmodel.Event, len(evs))
	for i, in := range evs {
		at, _ := in.OrderAt()
		hist[i] = refmodel.Event{At: at, OptOut: in.Action == optout.OptOut}
	}
	return refmodel.Of(hist)
}

// flight is one replica's write of Salesforce, from the entry as read at
// readRev.
type flight struct {
	readRev uint64
	sfID    string
	value   bool
	decided bool // whether it reached Salesforce is known
	landed  bool
	claim   *optout.Claim // a sales-field write's claim
}

// reading is Salesforce's value read at readRev, to be recorded later.
type reading struct {
	readRev uint64
	value   bool
}

type machineModel struct {
	field     string
	events    []optout.EventInput
	delivered []optout.EventInput // in delivery order, duplicates too
	seen      map[string]bool

	e      optout.Entry
	exists bool
	rev    uint64 // the store's revision: bumped by every change

	sf      bool // the simulated Salesforce record's value of field
	flights []*flight
	// ghosts are the writes of replicas that died mid-call: they may still
	// land until their call's deadline, and never report.
	ghosts   []*flight
	readings []reading
	now      time.Time
}

func (m *machineModel) fatalf(t *rapid.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\nentry: %+v (confirmed %v)", fmt.Sprintf(format, args...), m.e, deref(m.e.Confirmed))
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func (m *machineModel) apply(next optout.Entry, changed bool) {
	if changed {
		m.e, m.rev = next, m.rev+1
	}
}

func (m *machineModel) deliver(t *rapid.T, in optout.EventInput) {
	next, r := optout.Fold(m.e, m.exists, in, m.field)
	if !m.exists {
		r.Changed = true // the store creates the entry
	}
	m.exists = true
	m.apply(next, r.Changed)
	if !in.Replay {
		m.delivered = append(m.delivered, in)
		m.seen[in.ID] = true
	}
	t.Logf("deliver %s %s at %s replay=%t → rev %d %s", in.ID, in.Action, stampOf(in), in.Replay, m.rev, m.e.State)
}

func stampOf(in optout.EventInput) string {
	at, clamped := in.OrderAt()
	s := at.Sub(mBase).String()
	if clamped {
		s += " (clamped)"
	}
	return s
}

// land decides whether f's write reaches Salesforce. A sales-field write
// lands only while its writer's call may still run (its claim's call
// deadline, when the writer gives it up) and only while the entry's claim
// is its own or one of the same value (a writer of the same value may take
// the person over): two writers of different values never write the
// person at once, so an older value cannot land over a newer one.
func (m *machineModel) land(t *rapid.T, f *flight) {
	f.decided = true
	if f.claim != nil && !m.now.Before(f.claim.Deadline) {
		return // the writer gave its call up
	}
	if f.landed = rapid.Bool().Draw(t, "landed"); !f.landed {
		return
	}
	if w := m.e.Writing; f.claim != nil && (w == nil || (w.ID != f.claim.ID && w.Value != f.value)) {
		m.fatalf(t, "a write of %t landed while its claim %s was not the entry's nor one of its value (%+v): a writer of the other value may have written meanwhile", f.value, f.claim.ID, w)
	}
	m.write(t, f.value)
}

// write makes the simulated Salesforce hold value, as one of our writes.
func (m *machineModel) write(t *rapid.T, value bool) {
	if m.field == stdF && !value {
		m.fatalf(t, "wrote %s=false: Email Opt Out is never cleared from here", stdF)
	}
	m.sf = value
}

// report settles a flight: a confirm (only of a write that landed) on the
// revision it was read at or a stale one, or a failure (retryable or
// permanent) of a write that may have landed.
func (m *machineModel) report(t *rapid.T, f *flight) {
	if !f.decided {
		m.land(t, f)
	}
	w := optout.Write{SalesforceID: f.sfID, Field: m.field, Value: f.value, At: m.now, Claim: f.claim}
	outcome := "retryable"
	if f.landed {
		outcome = rapid.SampledFrom([]string{"ok", "ok", "retryable", "permanent"}).Draw(t, "outcome")
	} else {
		outcome = rapid.SampledFrom([]string{"retryable", "permanent"}).Draw(t, "outcome")
	}
	switch outcome {
	case "ok":
		w.OK, w.Current = true, m.rev == f.readRev
		next, changed := optout.Wrote(m.e, w, m.field)
		m.apply(next, changed)
	default:
		if m.e.SalesforceID != f.sfID {
			next, released := optout.Release(m.e, f.claim) // as the store does
			m.apply(next, released)
			return
		}
		wasFailed := m.e.State == optout.StateFailed
		next, out := optout.Failed(m.e, optout.Failure{Write: w, Permanent: outcome == "permanent", Err: "boom",
			Wait: 30 * time.Second, Now: m.now, Horizon: time.Hour}, m.field)
		m.apply(next, true)
		if next.State == optout.StateFailed && !out.DeadLetter && !wasFailed {
			m.fatalf(t, "FAILED without a dead letter")
		}
	}
	t.Logf("report write %t read at rev %d landed=%t %s → rev %d %s", f.value, f.readRev, f.landed, outcome, m.rev, m.e.State)
}

func (m *machineModel) actions() map[string]func(*rapid.T) {
	pick := func(t *rapid.T, n int, label string) int { return rapid.IntRange(0, n-1).Draw(t, label) }
	return map[string]func(*rapid.T){
		"deliver": func(t *rapid.T) { // a first delivery or a duplicate
			m.deliver(t, m.events[pick(t, len(m.events), "event")])
		},
		"replay": func(t *rapid.T) { // an operator's replay of a known event
			if len(m.delivered) == 0 {
				t.Skip("nothing delivered")
			}
			in := m.delivered[pick(t, len(m.delivered), "replayed")]
			in.Replay = true
			m.deliver(t, in)
		},
		"read": func(t *rapid.T) { // a replica reads the entry and starts a write if one is due
			if !m.exists {
				t.Skip("no entry")
			}
			value, write := m.e.Target(m.field)
			if !write {
				t.Skip("not dirty")
			}
			f := &flight{readRev: m.rev, sfID: m.e.SalesforceID, value: value}
			if m.field == salesF {
				// The push records a sales-field write before making it, on
				// the revision it read, and takes its claim.
				f.claim = optout.NewClaim(m.now, optout.DefaultClaimTTL)
				next, changed, held := optout.Attempt(m.e, optout.Write{SalesforceID: f.sfID, Field: m.field, Value: value, At: m.now, Claim: f.claim}, m.field)
				if held != nil {
					t.Skip("another writer's claim holds the person")
				}
				m.apply(next, changed)
				f.readRev = m.rev
			}
			m.flights = append(m.flights, f)
		},
		"die": func(t *rapid.T) { // a replica dies mid-call: its write may land, it never reports
			if len(m.flights) == 0 {
				t.Skip("no write in flight")
			}
			i := pick(t, len(m.flights), "flight")
			f := m.flights[i]
			m.flights = append(m.flights[:i:i], m.flights[i+1:]...)
			if !f.decided {
				m.ghosts = append(m.ghosts, f) // its call may still land, later
			}
			t.Logf("die: write %t read at rev %d never reported", f.value, f.readRev)
		},
		"ghostLands": func(t *rapid.T) { // a dead replica's call reaches Salesforce, or is lost
			if len(m.ghosts) == 0 {
				t.Skip("no dead replica's write in flight")
			}
			i := pick(t, len(m.ghosts), "ghost")
			f := m.ghosts[i]
			m.ghosts = append(m.ghosts[:i:i], m.ghosts[i+1:]...)
			m.land(t, f)
			t.Logf("ghost: write %t read at rev %d landed=%t", f.value, f.readRev, f.landed)
		},
		"land": func(t *rapid.T) { // a write reaches Salesforce, or is lost
			var open []*flight
			for _, f := range m.flights {
				if !f.decided {
					open = append(open, f)
				}
			}
			if len(open) == 0 {
				t.Skip("no write in flight")
			}
			m.land(t, open[pick(t, len(open), "flight")])
		},
		"report": func(t *rapid.T) {
			if len(m.flights) == 0 {
				t.Skip("no write in flight")
			}
			i := pick(t, len(m.flights), "flight")
			f := m.flights[i]
			m.flights = append(m.flights[:i:i], m.flights[i+1:]...)
			m.report(t, f)
		},
		"readSalesforce": func(t *rapid.T) {
			if !m.exists || m.e.SalesforceID == "" {
				t.Skip("no record")
			}
			m.readings = append(m.readings, reading{readRev: m.rev, value: m.sf})
		},
		"observe": func(t *rapid.T) { // records a reading if the entry has not moved since
			if len(m.readings) == 0 {
				t.Skip("nothing read")
			}
			i := pick(t, len(m.readings), "reading")
			r := m.readings[i]
			m.readings = append(m.readings[:i:i], m.readings[i+1:]...)
			m.observe(r)
		},
		"tick": func(t *rapid.T) { // seconds to most of an hour: claims end, retries fall due
			m.now = m.now.Add(time.Duration(rapid.IntRange(1, 2400).Draw(t, "seconds")) * time.Second)
		},
		"": m.check,
	}
}

func (m *machineModel) observe(r reading) {
	if r.readRev != m.rev {
		return // the store leaves a moved entry for the next round
	}
	next, changed := optout.Observed(m.e, m.e.SalesforceID, m.field, r.value, m.now, m.field)
	m.apply(next, changed)
}

// check holds after every step: the entry's wish is the reference's over
// what was delivered, and Email Opt Out is never asked to be cleared.
func (m *machineModel) check(t *rapid.T) {
	if !m.exists {
		return
	}
	w := reference(m.delivered)
	if m.e.OptedOut != w.OptOut || !m.e.DecidedAt.Equal(w.DecidedAt) {
		m.fatalf(t, "wish (%t, %s), reference (%t, %s)", m.e.OptedOut, m.e.DecidedAt, w.OptOut, w.DecidedAt)
	}
	if !m.e.LastOptOutAt.Equal(w.LastOptOutAt) {
		m.fatalf(t, "LastOptOutAt %s, reference %s", m.e.LastOptOutAt, w.LastOptOutAt)
	}
	if v, w := m.e.Target(stdF); w && !v {
		m.fatalf(t, "Target(%s) asks to write false", stdF)
	}
	if m.e.State == "" {
		m.fatalf(t, "no state")
	}
}

func drawEvents(t *rapid.T) []optout.EventInput {
	n := rapid.IntRange(1, 10).Draw(t, "events")
	anyID := rapid.IntRange(0, 9).Draw(t, "withID") > 0 // mostly, some event carries the Salesforce id
	evs := make([]optout.EventInput, n)
	for i := range evs {
		a := rapid.SampledFrom([]optout.Action{optout.OptOut, optout.Resubscribe}).Draw(t, "action")
		occurred := rapid.IntRange(0, 12).Draw(t, "occurred")               // small range: equal stamps are common
		storedAfter := rapid.IntRange(-6, 4).Draw(t, "storedAfterOccurred") // negative: a future stamp, clamped
		sf := ""
		if anyID && rapid.IntRange(0, 3).Draw(t, "carriesID") > 0 {
			sf = sfC
		}
		ev := in(fmt.Sprintf("e%d", i), a, occurred, sf)
		ev.StoredAt = at(occurred + storedAfter)
		if storedAfter == 4 {
			ev.StoredAt = time.Time{} // storage time unknown
		}
		evs[i] = ev
	}
	return evs
}

func TestModel(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		m := &machineModel{
			field:  rapid.SampledFrom([]string{stdF, salesF}).Draw(t, "field"),
			events: drawEvents(t),
			seen:   map[string]bool{},
			e:      optout.Entry{Tenant: "acme"},
			now:    at(1000),
		}
		t.Repeat(m.actions())

		// Every event arrives (in a random order), every write in flight
		// is settled, and what was read is recorded or dropped.
		for _, i := range rapid.Permutation(indexes(len(m.events))).Draw(t, "late") {
			if !m.seen[m.events[i].ID] {
				m.deliver(t, m.events[i])
			}
		}
		for _, g := range m.ghosts { // dead replicas' calls land now or never
			m.land(t, g)
		}
		m.ghosts = nil
		for len(m.flights) > 0 || len(m.readings) > 0 {
			if len(m.flights) > 0 {
				f := m.flights[0]
				m.flights = m.flights[1:]
				m.report(t, f)
			}
			if len(m.readings) > 0 {
				m.observe(m.readings[0])
				m.readings = m.readings[1:]
			}
		}
		m.check(t)
		if m.e.State == optout.StateFailed {
			in := m.delivered[0]
			in.Replay = true
			m.deliver(t, in)
			if m.e.State == optout.StateFailed {
				m.fatalf(t, "a replay did not re-arm a FAILED person")
			}
		}

		// Clean push rounds: every write lands and is confirmed on the
		// current revision.
		for round := 0; m.e.Dirty(m.field); round++ {
			if round == 3 {
				m.fatalf(t, "still dirty after %d clean rounds", round)
			}
			value, _ := m.e.Target(m.field)
			m.write(t, value)
			next, changed := optout.Wrote(m.e, optout.Write{SalesforceID: m.e.SalesforceID, Field: m.field, Value: value, At: m.now, Current: true, OK: true}, m.field)
			m.apply(next, changed)
		}

		latest := reference(m.events)
		hasID := false
		for _, in := range m.events {
			hasID = hasID || in.SalesforceID != ""
		}
		want := latest.Salesforce(m.field == stdF)
		switch {
		case !hasID:
			if m.sf || m.e.SalesforceID != "" {
				m.fatalf(t, "written without a Salesforce id")
			}
			wantState := optout.StateSynced
			if m.e.Wanted(m.field) {
				wantState = optout.StateParked
			}
			if m.e.State != wantState {
				m.fatalf(t, "state %s without a Salesforce id, want %s", m.e.State, wantState)
			}
		case m.sf != want:
			m.fatalf(t, "Salesforce %s=%t, want %t (latest wish %t, any opt-out %t)", m.field, m.sf, want, latest.OptOut, latest.AnyOptOut)
		case m.e.State != optout.StateSynced:
			m.fatalf(t, "state %s after clean rounds", m.e.State)
		}
		if m.e.Wanted(m.field) != want {
			m.fatalf(t, "Wanted(%s) = %t, want %t", m.field, m.e.Wanted(m.field), want)
		}
	})
}

func indexes(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestModelOrderIndependence folds one multiset of events (duplicates
// too) in two random orders: the wish, the last opt-out and what
// Salesforce should hold on either field are the same.
func TestModelOrderIndependence(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		field := rapid.SampledFrom([]string{stdF, salesF}).Draw(t, "field")
		evs := drawEvents(t)
		multiset := append([]optout.EventInput(nil), evs...)
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(evs)-1), 0, 6).Draw(t, "duplicates") {
			multiset = append(multiset, evs[i])
		}
		a := folded(field, rapid.Permutation(multiset).Draw(t, "order1")...)
		b := folded(field, rapid.Permutation(multiset).Draw(t, "order2")...)
		w := reference(evs)
		for _, e := range []optout.Entry{a, b} {
			if e.OptedOut != w.OptOut || !e.DecidedAt.Equal(w.DecidedAt) || !e.LastOptOutAt.Equal(w.LastOptOutAt) {
				t.Fatalf("entry (%t, %s, last opt-out %s), reference (%t, %s, %s)", e.OptedOut, e.DecidedAt, e.LastOptOutAt, w.OptOut, w.DecidedAt, w.LastOptOutAt)
			}
		}
		if a.SalesforceID != b.SalesforceID || a.State != b.State {
			t.Fatalf("orders disagree: SalesforceID %q/%q State %s/%s", a.SalesforceID, b.SalesforceID, a.State, b.State)
		}
		for _, f := range []string{stdF, salesF} {
			va, wa := a.Target(f)
			vb, wb := b.Target(f)
			if va != vb || wa != wb {
				t.Fatalf("Target(%s): (%t, %t) in one order, (%t, %t) in the other", f, va, wa, vb, wb)
			}
		}
	})
}
