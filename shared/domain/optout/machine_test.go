package optout_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/optout"
)

// Table tests of every transition of the pure state machine (machine.go);
// no NATS.

const (
	stdF   = optout.StandardField
	salesF = "Marketo_Sales_Opt_Out__c" // a custom field, as tenant.DefaultCustomField
	sfC    = "003RO0000035WQgYAM"       // a Contact
	sfC2   = "003RO0000099ZZZYAM"       // another Contact
	sfL    = "00QRO00000AbCdEYAM"       // a Lead
)

var mBase = time.Date(2026, 10, 1, 9, 0, 0, 0, time.UTC)

// at is mBase plus s seconds.
func at(s int) time.Time { return mBase.Add(time.Duration(s) * time.Second) }

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// in is an event ordered at s (stored one second later).
func in(id string, a optout.Action, s int, sf string) optout.EventInput {
	typ := ""
	if sf != "" {
		typ = "Contact"
		if strings.HasPrefix(sf, "00Q") {
			typ = "Lead"
		}
	}
	return optout.EventInput{ID: id, Action: a, OccurredAt: at(s), StoredAt: at(s + 1), SalesConnectID: "sc-1",
		SalesforceID: sf, ObjectType: typ, Source: "EMAIL_LINK", TraceID: "trace-" + id}
}

// folded folds events, in order, into a new entry.
func folded(field string, evs ...optout.EventInput) optout.Entry {
	e, exists := optout.Entry{Tenant: "acme"}, false
	for _, ev := range evs {
		e, _ = optout.Fold(e, exists, ev, field)
		exists = true
	}
	return e
}

// wrote records a write of value on field.
func wrote(e optout.Entry, field string, value, current, ok bool) optout.Entry {
	e, _ = optout.Wrote(e, optout.Write{SalesforceID: e.SalesforceID, Field: field, Value: value, At: at(500), Current: current, OK: ok}, field)
	return e
}

// confirmed records a confirmed write of value on the current revision.
func confirmed(e optout.Entry, field string, value bool) optout.Entry {
	return wrote(e, field, value, true, true)
}

func failedPermanently(e optout.Entry, field string) optout.Entry {
	e, _ = optout.Failed(e, optout.Failure{Write: optout.Write{SalesforceID: e.SalesforceID, Field: field, Value: true},
		Permanent: true, Err: "ENTITY_IS_DELETED", Now: at(600)}, field)
	return e
}

// optedOut is a person who opted out at 10 on Contact sfC.
func optedOut(field string) optout.Entry { return folded(field, in("o1", optout.OptOut, 10, sfC)) }

// want are the fields a row asserts; zero values are not checked.
type want struct {
	changed   *bool
	state     optout.State
	optedOut  *bool
	target    *[2]bool // value, write on the row's field
	confirmed string   // "nil", "true", "false"
	setByUs   *bool
	reason    string // a substring of Reason
	check     func(t *testing.T, e optout.Entry)
}

func tg(value, write bool) *[2]bool { return &[2]bool{value, write} }

type row struct {
	name  string
	field string
	run   func(field string) (optout.Entry, bool)
	want  want
}

func (w want) assert(t *testing.T, field string, e optout.Entry, changed bool) {
	t.Helper()
	if w.changed != nil && changed != *w.changed {
		t.Errorf("changed = %t, want %t", changed, *w.changed)
	}
	if w.state != "" && e.State != w.state {
		t.Errorf("State = %s, want %s (reason %q)", e.State, w.state, e.Reason)
	}
	if w.optedOut != nil && e.OptedOut != *w.optedOut {
		t.Errorf("OptedOut = %t, want %t", e.OptedOut, *w.optedOut)
	}
	if w.target != nil {
		v, wr := e.Target(field)
		if v != w.target[0] || wr != w.target[1] {
			t.Errorf("Target(%s) = (%t, %t), want (%t, %t)", field, v, wr, w.target[0], w.target[1])
		}
		if e.Dirty(field) != wr {
			t.Errorf("Dirty(%s) = %t, Target says write=%t", field, e.Dirty(field), wr)
		}
	}
	if w.confirmed != "" {
		got := "nil"
		if e.Confirmed != nil {
			got = map[bool]string{true: "true", false: "false"}[*e.Confirmed]
		}
		if got != w.confirmed {
			t.Errorf("Confirmed = %s, want %s", got, w.confirmed)
		}
	}
	if w.setByUs != nil && e.SetByUs != *w.setByUs {
		t.Errorf("SetByUs = %t, want %t", e.SetByUs, *w.setByUs)
	}
	if w.reason != "" && !strings.Contains(e.Reason, w.reason) {
		t.Errorf("Reason = %q, want it to contain %q", e.Reason, w.reason)
	}
	if w.check != nil {
		w.check(t, e)
	}
}

func runRows(t *testing.T, rows []row) {
	t.Helper()
	for _, r := range rows {
		fields := []string{r.field}
		if r.field == "" {
			fields = []string{stdF, salesF}
		}
		for _, f := range fields {
			t.Run(r.name+"/"+f, func(t *testing.T) {
				e, changed := r.run(f)
				r.want.assert(t, f, e, changed)
			})
		}
	}
}

// unchanged runs tr on e and reports whether it said "changed" or altered e.
func unchanged(t *testing.T, e optout.Entry, tr func(optout.Entry) (optout.Entry, bool)) {
	t.Helper()
	next, changed := tr(e)
	if changed {
		t.Errorf("reported a change")
	}
	if !reflect.DeepEqual(next, e) {
		t.Errorf("entry changed:\n got %+v\nwant %+v", next, e)
	}
}

func TestFold(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "new entry opt-out", run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(optout.Entry{Tenant: "acme"}, false, in("o1", optout.OptOut, 10, sfC), f)
			return e, r.Changed && r.Won && !r.Clamped
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), confirmed: "nil", setByUs: no(),
			reason: "=true to be written", check: func(t *testing.T, e optout.Entry) {
				if e.DecidedBy != "o1" || !e.DecidedAt.Equal(at(10)) || !e.LastOptOutAt.Equal(at(10)) || e.SalesforceID != sfC ||
					e.ObjectType != "Contact" || e.SalesConnectID != "sc-1" || !e.Seen("o1") || e.LastEvent == nil || e.LastEvent.ID != "o1" ||
					!e.LastEvent.OrderedAt.IsZero() || e.TraceID != "trace-o1" || e.Source != "EMAIL_LINK" {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "new entry opt-out without a Salesforce id is parked", run: func(f string) (optout.Entry, bool) {
			return folded(f, in("o1", optout.OptOut, 10, "")), true
		}, want: want{state: optout.StateParked, optedOut: yes(), target: tg(false, false), reason: "no Salesforce id yet"}},
		{name: "parked opt-out is pending once an event carries the id", run: func(f string) (optout.Entry, bool) {
			return folded(f, in("o1", optout.OptOut, 10, ""), in("r1", optout.Resubscribe, 5, sfC)), true
		}, want: want{state: optout.StatePending, optedOut: yes(), target: tg(true, true)}},
		{name: "new entry resubscribe", run: func(f string) (optout.Entry, bool) {
			return folded(f, in("r1", optout.Resubscribe, 10, sfC)), true
		}, want: want{state: optout.StateSynced, optedOut: no(), target: tg(false, false), reason: "no opt-out in force"}},
		{name: "newer resubscribe clears the sales field we set", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Won
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: no(), target: tg(false, true), confirmed: "true", setByUs: yes(), reason: "=false to be written"}},
		{name: "newer resubscribe never clears the standard field", field: stdF, run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Won
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: no(), target: tg(true, false), reason: "never cleared from here"}},
		{name: "older resubscribe is ignored", run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 5, sfC), f)
			return e, r.Won
		}, want: want{changed: no(), state: optout.StateSynced, optedOut: yes(), target: tg(true, false), reason: "ignored: not newer than the opt-out",
			check: func(t *testing.T, e optout.Entry) {
				if e.DecidedBy != "o1" || !e.DecidedAt.Equal(at(10)) || !e.Seen("r1") || e.LastEvent.ID != "r1" {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "equal-time resubscribe: the opt-out wins", run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(optedOut(f), true, in("r1", optout.Resubscribe, 10, sfC), f)
			return e, r.Won
		}, want: want{changed: no(), optedOut: yes(), target: tg(true, true), reason: "ignored: not newer"}},
		{name: "equal-time opt-out after a resubscribe: the opt-out wins", run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(folded(f, in("r1", optout.Resubscribe, 10, sfC)), true, in("o1", optout.OptOut, 10, sfC), f)
			return e, r.Won
		}, want: want{changed: yes(), optedOut: yes(), target: tg(true, true), check: func(t *testing.T, e optout.Entry) {
			if e.DecidedBy != "o1" {
				t.Errorf("DecidedBy = %s", e.DecidedBy)
			}
		}}},
		{name: "older opt-out after a resubscribe: the resubscribe stands", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(folded(f, in("r1", optout.Resubscribe, 20, sfC)), true, in("o1", optout.OptOut, 10, sfC), f)
			return e, r.Won
		}, want: want{changed: no(), state: optout.StateSynced, optedOut: no(), target: tg(false, false), reason: "newer resubscribe of",
			check: func(t *testing.T, e optout.Entry) {
				if !e.LastOptOutAt.Equal(at(10)) || !e.DecidedAt.Equal(at(20)) {
					t.Errorf("LastOptOutAt %s DecidedAt %s", e.LastOptOutAt, e.DecidedAt)
				}
			}}},
		{name: "older opt-out after a resubscribe still wants Email Opt Out", field: stdF, run: func(f string) (optout.Entry, bool) {
			return folded(f, in("r1", optout.Resubscribe, 20, sfC), in("o1", optout.OptOut, 10, sfC)), true
		}, want: want{state: optout.StatePending, optedOut: no(), target: tg(true, true)}},
		{name: "future stamp is clamped to the storage time", run: func(f string) (optout.Entry, bool) {
			ev := in("o1", optout.OptOut, 1000, sfC)
			ev.StoredAt = at(20)
			e, r := optout.Fold(optout.Entry{Tenant: "acme"}, false, ev, f)
			return e, r.Clamped && r.Won
		}, want: want{changed: yes(), optedOut: yes(), reason: "is later than the event was stored", check: func(t *testing.T, e optout.Entry) {
			if !e.DecidedAt.Equal(at(20)) || !e.LastOptOutAt.Equal(at(20)) || e.LastEvent.OrderedAt.IsZero() ||
				!e.LastEvent.OrderedAt.Equal(at(20)) || !e.LastEvent.OccurredAt.Equal(at(1000)) {
				t.Errorf("DecidedAt %s LastOptOutAt %s LastEvent %+v", e.DecidedAt, e.LastOptOutAt, e.LastEvent)
			}
		}}},
		{name: "a clamped future opt-out does not outrank a later real resubscribe", field: salesF, run: func(f string) (optout.Entry, bool) {
			ev := in("o1", optout.OptOut, 1000, sfC)
			ev.StoredAt = at(20)
			e, r := optout.Fold(folded(f, ev), true, in("r1", optout.Resubscribe, 30, sfC), f)
			return e, r.Won
		}, want: want{changed: yes(), optedOut: no()}},
		{name: "replay of a seen event is no change", run: func(f string) (optout.Entry, bool) {
			e := optedOut(f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				n, r := optout.Fold(e, true, in("o1", optout.OptOut, 10, sfC), f)
				return n, r.Changed
			})
			replay := in("o1", optout.OptOut, 10, sfC)
			replay.Replay = true // a replay of a person that is not FAILED
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				n, r := optout.Fold(e, true, replay, f)
				return n, r.Changed
			})
			return e, false
		}, want: want{}},
		{name: "Replay of a FAILED entry re-arms it", run: func(f string) (optout.Entry, bool) {
			replay := in("o1", optout.OptOut, 10, sfC)
			replay.Replay = true
			e, r := optout.Fold(failedPermanently(optedOut(f), f), true, replay, f)
			return e, r.Changed
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), reason: "replayed", check: func(t *testing.T, e optout.Entry) {
			if e.Retry != (optout.Retry{}) {
				t.Errorf("Retry %+v", e.Retry)
			}
		}}},
		{name: "a new event clears FAILED", run: func(f string) (optout.Entry, bool) {
			e, r := optout.Fold(failedPermanently(optedOut(f), f), true, in("o2", optout.OptOut, 20, sfC), f)
			return e, r.Changed
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), check: func(t *testing.T, e optout.Entry) {
			if e.Retry != (optout.Retry{}) {
				t.Errorf("Retry %+v", e.Retry)
			}
		}}},
		{name: "a new Salesforce id resets the confirmation", run: func(f string) (optout.Entry, bool) {
			e := confirmed(optedOut(f), f, true)
			e, r := optout.Fold(e, true, in("o2", optout.OptOut, 5, sfC2), f)
			return e, r.Changed
		}, want: want{state: optout.StatePending, optedOut: yes(), target: tg(true, true), confirmed: "nil", setByUs: no(), check: func(t *testing.T, e optout.Entry) {
			if e.SalesforceID != sfC2 || e.Field != "" || !e.ConfirmedAt.IsZero() {
				t.Errorf("entry %+v", e)
			}
		}}},
		{name: "a converted Lead's id does not repoint the entry", run: func(f string) (optout.Entry, bool) {
			e := confirmed(folded(f, in("o1", optout.OptOut, 10, sfL)), f, true)
			e, _ = optout.ConversionFollowed(e, sfL, sfC, f)
			e = confirmed(e, f, true)
			e, r := optout.Fold(e, true, in("o2", optout.OptOut, 20, sfL), f)
			return e, r.Changed
		}, want: want{state: optout.StateSynced, optedOut: yes(), target: tg(true, false), confirmed: "true", setByUs: yes(), check: func(t *testing.T, e optout.Entry) {
			if e.SalesforceID != sfC || e.ObjectType != "Contact" {
				t.Errorf("SalesforceID %s ObjectType %s", e.SalesforceID, e.ObjectType)
			}
		}}},
	})
}

func TestWrote(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "confirmed on the current revision", run: func(f string) (optout.Entry, bool) {
			e := optedOut(f)
			e, _ = optout.Failed(e, optout.Failure{Write: optout.Write{SalesforceID: sfC, Field: f, Value: true}, Err: "timeout", Wait: time.Minute, Now: at(100)}, f)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, At: at(200), Current: true, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StateSynced, target: tg(true, false), confirmed: "true", setByUs: yes(), reason: "Salesforce confirmed " + "",
			check: func(t *testing.T, e optout.Entry) {
				if e.Field == "" || !e.ConfirmedAt.Equal(at(200)) || e.Retry != (optout.Retry{}) {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "confirmed but not current: unknown, SetByUs raised", run: func(f string) (optout.Entry, bool) {
			return optout.Wrote(optedOut(f), optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: false, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StatePending, target: tg(true, true), confirmed: "nil", setByUs: yes()}},
		{name: "not current on a resubscribe: SetByUs kept, still dirty", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: false, Current: false, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: no(), target: tg(false, true), confirmed: "nil", setByUs: yes()}},
		{name: "a stale write of true after the person resubscribed makes it dirty again", field: salesF, run: func(f string) (optout.Entry, bool) {
			// Replica A read the opt-out and wrote true; the resubscribe
			// landed before A's confirm.
			e, _ := optout.Fold(optedOut(f), true, in("r1", optout.Resubscribe, 20, sfC), f)
			if e.Dirty(f) {
				t.Errorf("resubscribe before any write of ours is dirty")
			}
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: false, OK: true}, f)
		}, want: want{state: optout.StatePending, target: tg(false, true), confirmed: "nil", setByUs: yes()}},
		{name: "failed write of true raises SetByUs", run: func(f string) (optout.Entry, bool) {
			return optout.Wrote(optedOut(f), optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: true, OK: false}, f)
		}, want: want{changed: yes(), target: tg(true, true), confirmed: "nil", setByUs: yes()}},
		{name: "confirmed false on a resubscribe: clean, SetByUs lowered", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: false, Current: true, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StateSynced, target: tg(false, false), confirmed: "false", setByUs: no(), reason: "=false"}},
		{name: "wrong Salesforce id is no change", run: func(f string) (optout.Entry, bool) {
			e := optedOut(f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				return optout.Wrote(e, optout.Write{SalesforceID: sfC2, Field: f, Value: true, Current: true, OK: true}, f)
			})
			return e, false
		}, want: want{}},
		{name: "a stale write already recorded as unknown and ours is no change", run: func(f string) (optout.Entry, bool) {
			// Two replicas' stale reports of one value: the second would
			// be an audit record of nothing.
			e := wrote(optedOut(f), f, true, false, true)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: false, OK: true}, f)
			})
			return e, false
		}, want: want{state: optout.StatePending, target: tg(true, true), confirmed: "nil", setByUs: yes()}},
	})
}

func TestAttempt(t *testing.T) {
	t.Parallel()
	attempt := func(e optout.Entry, f string, value bool) (optout.Entry, bool) {
		e, changed, _ := optout.Attempt(e, optout.Write{SalesforceID: e.SalesforceID, Field: f, Value: value}, f)
		return e, changed
	}
	runRows(t, []row{
		{name: "before a write of true: unknown and possibly ours, still dirty", run: func(f string) (optout.Entry, bool) {
			return attempt(optedOut(f), f, true)
		}, want: want{changed: yes(), state: optout.StatePending, target: tg(true, true), confirmed: "nil", setByUs: yes()}},
		{name: "no answer ever came, then a newer resubscribe clears our mark", field: salesF, run: func(f string) (optout.Entry, bool) {
			// The replica died after Salesforce applied the write: the
			// attempt is all the ledger knows.
			e, _ := attempt(optedOut(f), f, true)
			e, r := optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Changed
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: no(), target: tg(false, true), setByUs: yes()}},
		{name: "a true found afterwards is not taken for someone else's", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := attempt(optedOut(f), f, true)
			e, _ = optout.Observed(e, sfC, f, true, at(100), f)
			e, r := optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Changed
		}, want: want{optedOut: no(), target: tg(false, true), setByUs: yes()}},
		{name: "the confirmation on the attempt's revision settles it", run: func(f string) (optout.Entry, bool) {
			e, _ := attempt(optedOut(f), f, true)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, At: at(200), Current: true, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StateSynced, target: tg(true, false), confirmed: "true", setByUs: yes()}},
		{name: "a clear in flight leaves the value unknown: a newer opt-out is written again", field: salesF, run: func(f string) (optout.Entry, bool) {
			// The person resubscribed after a confirmed opt-out; the clear
			// is recorded, lands, and its writer dies unreported.
			e, _ := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			if !e.NeedsAttempt(f, false) {
				t.Errorf("a clear over a confirmed true needs no attempt")
			}
			e, _ = attempt(e, f, false)
			e, r := optout.Fold(e, true, in("o2", optout.OptOut, 30, sfC), f)
			return e, r.Changed
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), confirmed: "nil", setByUs: yes()}},
		{name: "a true read just before our write, in its request, stays someone else's", field: salesF, run: func(f string) (optout.Entry, bool) {
			// The composite's read found the mark set before our write of
			// the same true: confirmed, not ours, and a resubscribe leaves it.
			e, _ := attempt(optedOut(f), f, true)
			e, _ = optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, At: at(200), Current: true, OK: true, FoundSet: true}, f)
			if e.State != optout.StateSynced || e.Confirmed == nil || !*e.Confirmed || e.SetByUs || !strings.Contains(e.Reason, "not by optout-sync") {
				t.Errorf("after the write: %+v", e)
			}
			e, r := optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Changed
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: no(), target: tg(false, false), confirmed: "true", setByUs: no()}},
		{name: "a found true whose write's answer never came stays unknown and possibly ours", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := attempt(optedOut(f), f, true)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: true, OK: false, FoundSet: true}, f)
		}, want: want{state: optout.StatePending, target: tg(true, true), confirmed: "nil", setByUs: yes()}},
		{name: "already unknown and ours is no change", run: func(f string) (optout.Entry, bool) {
			e, _ := attempt(optedOut(f), f, true)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return attempt(e, f, true) })
			return e, false
		}, want: want{}},
		{name: "wrong Salesforce id is no change", run: func(f string) (optout.Entry, bool) {
			e := optedOut(f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				e, changed, _ := optout.Attempt(e, optout.Write{SalesforceID: sfC2, Field: f, Value: true}, f)
				return e, changed
			})
			return e, false
		}, want: want{}},
	})
}

func TestObserved(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "a false read while our write may still land proves nothing", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _, _ := optout.Attempt(optedOut(f), optout.Write{SalesforceID: sfC, Field: f, Value: true}, f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.Observed(e, sfC, f, false, at(100), f) })
			// The write lands after that read; the person then resubscribes.
			e, r := optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), f)
			return e, r.Changed
		}, want: want{changed: yes(), optedOut: no(), target: tg(false, true), confirmed: "nil", setByUs: yes()}},
		{name: "someone else's true is not claimed", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, ok := optout.Observed(folded(f, in("r1", optout.Resubscribe, 10, sfC)), sfC, f, true, at(100), f)
			if !strings.Contains(e.Reason, "(not by optout-sync)") {
				t.Errorf("Reason %q", e.Reason)
			}
			e, _ = optout.Fold(e, true, in("r2", optout.Resubscribe, 20, sfC), f)
			return e, ok
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: no(), target: tg(false, false), confirmed: "true", setByUs: no()}},
		{name: "someone else's true on an opt-out is not claimed either", field: salesF, run: func(f string) (optout.Entry, bool) {
			return optout.Observed(optedOut(f), sfC, f, true, at(100), f)
		}, want: want{changed: yes(), state: optout.StateSynced, target: tg(true, false), confirmed: "true", setByUs: no(), reason: "(not by optout-sync)"}},
		{name: "same value is no change", run: func(f string) (optout.Entry, bool) {
			e := confirmed(optedOut(f), f, true)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.Observed(e, sfC, f, true, at(900), f) })
			return e, false
		}, want: want{}},
		{name: "wrong Salesforce id is no change", run: func(f string) (optout.Entry, bool) {
			e := optedOut(f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.Observed(e, sfC2, f, true, at(900), f) })
			return e, false
		}, want: want{}},
		{name: "false observed while we may have set it: nothing left to clear", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Fold(confirmed(optedOut(f), f, true), true, in("r1", optout.Resubscribe, 20, sfC), f)
			return optout.Observed(e, sfC, f, false, at(100), f)
		}, want: want{changed: yes(), state: optout.StateSynced, target: tg(false, false), confirmed: "false", setByUs: no()}},
		{name: "false observed on an opt-out asks for the write", run: func(f string) (optout.Entry, bool) {
			return optout.Observed(confirmed(optedOut(f), f, true), sfC, f, false, at(100), f)
		}, want: want{changed: yes(), state: optout.StatePending, target: tg(true, true), confirmed: "false"}},
		{
			// Our write of true landed but was reported failed (SetByUs,
			// unknown); reading Salesforce's true must not disown it, or
			// the later resubscribe never clears the field we set.
			name: "a true our failed write may have set stays ours", field: salesF, run: func(f string) (optout.Entry, bool) {
				e, _ := optout.Failed(optedOut(f), optout.Failure{Write: optout.Write{SalesforceID: sfC, Field: f, Value: true}, Err: "timeout", Wait: time.Second, Now: at(100)}, f)
				e, ok := optout.Observed(e, sfC, f, true, at(101), f)
				if !e.SetByUs {
					t.Errorf("observing the true our write may have set disowned it")
				}
				e, _ = optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfC), f)
				return e, ok
			}, want: want{changed: yes(), state: optout.StatePending, optedOut: no(), target: tg(false, true), setByUs: yes()}},
	})
}

func TestFailed(t *testing.T) {
	t.Parallel()
	fail := func(e optout.Entry, f string, now time.Time, permanent bool) (optout.Entry, optout.FailOutcome) {
		return optout.Failed(e, optout.Failure{Write: optout.Write{SalesforceID: e.SalesforceID, Field: f, Value: true},
			Permanent: permanent, Err: "UNABLE_TO_LOCK_ROW", Wait: 30 * time.Second, Now: now, Horizon: time.Hour}, f)
	}
	runRows(t, []row{
		{name: "retryable schedules the next attempt", run: func(f string) (optout.Entry, bool) {
			e, out := fail(optedOut(f), f, at(100), false)
			if out != (optout.FailOutcome{}) {
				t.Errorf("outcome %+v", out)
			}
			return e, true
		}, want: want{state: optout.StatePending, target: tg(true, true), setByUs: yes(), reason: "write failed (attempt 1)", check: func(t *testing.T, e optout.Entry) {
			r := e.Retry
			if r.Attempts != 1 || !r.FirstFailure.Equal(at(100)) || !r.NextAttempt.Equal(at(130)) || r.LastError != "UNABLE_TO_LOCK_ROW" {
				t.Errorf("Retry %+v", r)
			}
		}}},
		{name: "second retryable counts and keeps the first failure", run: func(f string) (optout.Entry, bool) {
			e, _ := fail(optedOut(f), f, at(100), false)
			e, out := fail(e, f, at(200), false)
			return e, !out.DeadLetter
		}, want: want{changed: yes(), state: optout.StatePending, reason: "attempt 2", check: func(t *testing.T, e optout.Entry) {
			r := e.Retry
			if r.Attempts != 2 || !r.FirstFailure.Equal(at(100)) || !r.NextAttempt.Equal(at(230)) {
				t.Errorf("Retry %+v", r)
			}
		}}},
		{name: "at the horizon it still retries", run: func(f string) (optout.Entry, bool) {
			e, _ := fail(optedOut(f), f, at(100), false)
			e, out := fail(e, f, at(100).Add(time.Hour), false)
			return e, !out.DeadLetter
		}, want: want{changed: yes(), state: optout.StatePending}},
		{name: "past the horizon from the first failure: FAILED", run: func(f string) (optout.Entry, bool) {
			e, _ := fail(optedOut(f), f, at(100), false)
			e, _ = fail(e, f, at(2000), false)
			e, out := fail(e, f, at(100).Add(time.Hour+time.Second), false)
			return e, out.DeadLetter && out.HorizonExceeded
		}, want: want{changed: yes(), state: optout.StateFailed, target: tg(false, false), reason: "retry horizon of 1h0m0s (3 attempts", check: func(t *testing.T, e optout.Entry) {
			if e.Retry.Attempts != 3 || !e.Retry.FirstFailure.Equal(at(100)) {
				t.Errorf("Retry %+v", e.Retry)
			}
		}}},
		{name: "permanent: FAILED and dead-lettered", run: func(f string) (optout.Entry, bool) {
			e, out := fail(optedOut(f), f, at(100), true)
			return e, out.DeadLetter && !out.HorizonExceeded
		}, want: want{changed: yes(), state: optout.StateFailed, target: tg(false, false), reason: "Salesforce refused the record: UNABLE_TO_LOCK_ROW"}},
		{name: "a confirm after FAILED does not revive it", run: func(f string) (optout.Entry, bool) {
			e, _ := fail(optedOut(f), f, at(100), true)
			return optout.Wrote(e, optout.Write{SalesforceID: sfC, Field: f, Value: true, Current: true, OK: true}, f)
		}, want: want{changed: yes(), state: optout.StateFailed, target: tg(false, false), confirmed: "true"}},
	})
}

func obs(id, field string, value bool, s int) optout.Observation {
	return optout.Observation{EventID: id, SalesforceID: sfC, ObjectType: "Contact", Field: field, Value: value, At: at(s), Now: at(1000)}
}

func TestLearnt(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "a Salesforce opt-out newer than the decision wins, observed, not ours", run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("o1", optout.OptOut, 10, sfC), in("r1", optout.Resubscribe, 20, sfC))
			return optout.Learnt(e, true, obs("sf-1", f, true, 30), f)
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: yes(), target: tg(true, false), confirmed: "true", setByUs: no(), reason: "learnt from Salesforce",
			check: func(t *testing.T, e optout.Entry) {
				if e.DecidedBy != "sf-1" || e.Source != "SALESFORCE" || !e.LastOptOutAt.Equal(at(30)) || !e.Seen("sf-1") {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "an older Salesforce opt-out: the person's newer wish stands", field: salesF, run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("r1", optout.Resubscribe, 20, sfC))
			return optout.Learnt(e, true, obs("sf-1", f, true, 10), f)
		}, want: want{changed: yes(), optedOut: no(), target: tg(false, false), setByUs: no(), reason: "the person's newer wish stands"}},
		{name: "a newer clear of Email Opt Out (latest-wins) stops wanting it", field: stdF, run: func(f string) (optout.Entry, bool) {
			return optout.Learnt(confirmed(optedOut(f), f, true), true, obs("sf-1", stdF, false, 20), f)
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: no(), target: tg(false, false), confirmed: "false", check: func(t *testing.T, e optout.Entry) {
			if !e.ClearedAt.Equal(at(20)) || e.WantsStandard() {
				t.Errorf("ClearedAt %s WantsStandard %t", e.ClearedAt, e.WantsStandard())
			}
		}}},
		{name: "an older clear of Email Opt Out does not", field: stdF, run: func(f string) (optout.Entry, bool) {
			return optout.Learnt(confirmed(optedOut(f), f, true), true, obs("sf-1", stdF, false, 5), f)
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), confirmed: "false", check: func(t *testing.T, e optout.Entry) {
			if !e.WantsStandard() || e.ClearedAt.After(e.LastOptOutAt) {
				t.Errorf("ClearedAt %s WantsStandard %t", e.ClearedAt, e.WantsStandard())
			}
		}}},
		{name: "a clear as old as the opt-out: the opt-out wins", field: stdF, run: func(f string) (optout.Entry, bool) {
			return optout.Learnt(confirmed(optedOut(f), f, true), true, obs("sf-1", stdF, false, 10), f)
		}, want: want{changed: yes(), optedOut: yes(), target: tg(true, true), check: func(t *testing.T, e optout.Entry) {
			if !e.WantsStandard() {
				t.Errorf("ClearedAt %s WantsStandard false", e.ClearedAt)
			}
		}}},
		{name: "a newer opt-out after a learnt clear wants Email Opt Out again", field: stdF, run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Learnt(confirmed(optedOut(f), f, true), true, obs("sf-1", stdF, false, 20), f)
			e, r := optout.Fold(e, true, in("o2", optout.OptOut, 30, sfC), f)
			return e, r.Won
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true)}},
		{name: "a clear of the sales field never sets ClearedAt", field: salesF, run: func(f string) (optout.Entry, bool) {
			return optout.Learnt(optedOut(f), true, obs("sf-1", salesF, false, 20), f)
		}, want: want{changed: yes(), optedOut: no(), check: func(t *testing.T, e optout.Entry) {
			if !e.ClearedAt.IsZero() || !e.WantsStandard() {
				t.Errorf("ClearedAt %s", e.ClearedAt)
			}
		}}},
		{name: "a seen observation is no change", run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Learnt(optedOut(f), true, obs("sf-1", f, true, 30), f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.Learnt(e, true, obs("sf-1", f, false, 40), f) })
			return e, false
		}, want: want{}},
		{name: "learnt into a new entry", run: func(f string) (optout.Entry, bool) {
			return optout.Learnt(optout.Entry{Tenant: "acme"}, false, obs("sf-1", f, true, 30), f)
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: yes(), target: tg(true, false), confirmed: "true", setByUs: no(),
			check: func(t *testing.T, e optout.Entry) {
				if e.SalesforceID != sfC || e.ObjectType != "Contact" {
					t.Errorf("entry %+v", e)
				}
			}}},
	})
}

func TestConversionFollowed(t *testing.T) {
	t.Parallel()
	lead := func(f string) optout.Entry { return confirmed(folded(f, in("o1", optout.OptOut, 10, sfL)), f, true) }
	runRows(t, []row{
		{name: "Lead to Contact", run: func(f string) (optout.Entry, bool) {
			return optout.ConversionFollowed(lead(f), sfL, sfC, f)
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true), confirmed: "nil", setByUs: yes(), reason: "was converted",
			check: func(t *testing.T, e optout.Entry) {
				if e.SalesforceID != sfC || e.ObjectType != "Contact" || !reflect.DeepEqual(e.ConvertedFrom, []string{sfL}) || !e.ConfirmedAt.IsZero() {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "following twice is no change", run: func(f string) (optout.Entry, bool) {
			e, _ := optout.ConversionFollowed(lead(f), sfL, sfC, f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.ConversionFollowed(e, sfL, sfC, f) })
			return e, false
		}, want: want{}},
		{name: "another Lead is no change", run: func(f string) (optout.Entry, bool) {
			e := lead(f)
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) {
				return optout.ConversionFollowed(e, "00QRO00000ZzZzZYAM", sfC, f)
			})
			unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.ConversionFollowed(e, sfL, "", f) })
			return e, false
		}, want: want{}},
		{name: "a later resubscribe with the Lead id reaches the Contact", field: salesF, run: func(f string) (optout.Entry, bool) {
			e, _ := optout.ConversionFollowed(lead(f), sfL, sfC, f)
			e = confirmed(e, f, true)
			e, r := optout.Fold(e, true, in("r1", optout.Resubscribe, 20, sfL), f)
			return e, r.Won
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: no(), target: tg(false, true), confirmed: "true", setByUs: yes(),
			check: func(t *testing.T, e optout.Entry) {
				if e.SalesforceID != sfC || e.ObjectType != "Contact" || !reflect.DeepEqual(e.ConvertedFrom, []string{sfL}) {
					t.Errorf("entry %+v", e)
				}
			}}},
	})
}

func TestMerge(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "merging twice equals merging once", run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("r1", optout.Resubscribe, 20, ""))
			from := confirmed(folded(f, in("o1", optout.OptOut, 30, sfC)), f, true)
			once, changed := optout.Merge(e, from, f)
			unchanged(t, once, func(e optout.Entry) (optout.Entry, bool) { return optout.Merge(e, from, f) })
			return once, changed
		}, want: want{changed: yes(), state: optout.StateSynced, optedOut: yes(), target: tg(true, false), confirmed: "true", setByUs: yes(), reason: "merged the Salesforce-only entry",
			check: func(t *testing.T, e optout.Entry) {
				if e.SalesforceID != sfC || !e.Seen("o1") || !e.Seen("r1") || e.DecidedBy != "o1" {
					t.Errorf("entry %+v", e)
				}
			}}},
		{name: "the newer wish wins: a newer resubscribe stands", field: salesF, run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("r1", optout.Resubscribe, 40, sfC))
			from := folded(f, in("o1", optout.OptOut, 30, sfC))
			return optout.Merge(e, from, f)
		}, want: want{changed: yes(), optedOut: no(), check: func(t *testing.T, e optout.Entry) {
			if e.DecidedBy != "r1" || !e.LastOptOutAt.Equal(at(30)) {
				t.Errorf("DecidedBy %s LastOptOutAt %s", e.DecidedBy, e.LastOptOutAt)
			}
		}}},
		{name: "the newer wish wins: on a tie the opt-out", run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("r1", optout.Resubscribe, 30, sfC))
			from := folded(f, in("o1", optout.OptOut, 30, sfC))
			return optout.Merge(e, from, f)
		}, want: want{changed: yes(), optedOut: yes(), target: tg(true, true)}},
		{name: "a write of the Salesforce-only entry's in flight stays ours: a newer resubscribe clears it", field: salesF, run: func(f string) (optout.Entry, bool) {
			// The sf entry's push marked its write and died before confirming.
			from, _, _ := optout.Attempt(folded(f, in("o1", optout.OptOut, 30, sfC)), optout.Write{SalesforceID: sfC, Field: f, Value: true}, f)
			e := folded(f, in("r1", optout.Resubscribe, 40, sfC))
			return optout.Merge(e, from, f)
		}, want: want{changed: yes(), optedOut: no(), target: tg(false, true), confirmed: "nil", setByUs: yes(), check: func(t *testing.T, e optout.Entry) {
			if e.Field != salesF {
				t.Errorf("Field = %q; want the field our push may have set", e.Field)
			}
		}}},
		{name: "LastOptOutAt and ClearedAt are the max of both", run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("o1", optout.OptOut, 10, sfC), in("r1", optout.Resubscribe, 40, sfC))
			from := folded(f, in("o2", optout.OptOut, 30, sfC), in("r2", optout.Resubscribe, 35, sfC))
			from, _ = optout.Learnt(from, true, obs("sf-1", stdF, false, 32), f)
			return optout.Merge(e, from, f)
		}, want: want{changed: yes(), optedOut: no(), check: func(t *testing.T, e optout.Entry) {
			if !e.LastOptOutAt.Equal(at(30)) || !e.ClearedAt.Equal(at(32)) || !e.DecidedAt.Equal(at(40)) {
				t.Errorf("LastOptOutAt %s ClearedAt %s DecidedAt %s", e.LastOptOutAt, e.ClearedAt, e.DecidedAt)
			}
		}}},
		{name: "merging in either direction gives the same wish", run: func(f string) (optout.Entry, bool) {
			a := folded(f, in("o1", optout.OptOut, 10, sfC), in("r1", optout.Resubscribe, 25, sfC))
			b := folded(f, in("o2", optout.OptOut, 20, sfC))
			ab, _ := optout.Merge(a, b, f)
			ba, _ := optout.Merge(b, a, f)
			if ab.OptedOut != ba.OptedOut || !ab.DecidedAt.Equal(ba.DecidedAt) || !ab.LastOptOutAt.Equal(ba.LastOptOutAt) {
				t.Errorf("a+b %t %s %s, b+a %t %s %s", ab.OptedOut, ab.DecidedAt, ab.LastOptOutAt, ba.OptedOut, ba.DecidedAt, ba.LastOptOutAt)
			}
			return ab, true
		}, want: want{optedOut: no()}},
		{name: "another record's confirmation is not taken", run: func(f string) (optout.Entry, bool) {
			e := folded(f, in("o1", optout.OptOut, 10, sfC))
			from := confirmed(folded(f, in("o2", optout.OptOut, 5, sfC2)), f, true)
			return optout.Merge(e, from, f)
		}, want: want{changed: yes(), target: tg(true, true), confirmed: "nil", setByUs: no(), check: func(t *testing.T, e optout.Entry) {
			if e.SalesforceID != sfC {
				t.Errorf("SalesforceID %s", e.SalesforceID)
			}
		}}},
		{name: "merging into a new entry", run: func(f string) (optout.Entry, bool) {
			return optout.Merge(optout.Entry{Tenant: "acme"}, folded(f, in("o1", optout.OptOut, 10, sfC)), f)
		}, want: want{changed: yes(), state: optout.StatePending, optedOut: yes(), target: tg(true, true)}},
	})
}

func TestRetire(t *testing.T) {
	t.Parallel()
	runRows(t, []row{
		{name: "retired", run: func(f string) (optout.Entry, bool) {
			return optout.Retire(optedOut(f), "acme.sc.c2MtMQ")
		}, want: want{changed: yes(), state: optout.StateRetired, target: tg(false, false), reason: "merged into acme.sc.c2MtMQ",
			check: func(t *testing.T, e optout.Entry) {
				if e.MergedInto != "acme.sc.c2MtMQ" {
					t.Errorf("MergedInto %q", e.MergedInto)
				}
				unchanged(t, e, func(e optout.Entry) (optout.Entry, bool) { return optout.Retire(e, "acme.sc.c2MtMQ") })
			}}},
		{name: "a retired entry stays retired and clean whatever follows", run: func(f string) (optout.Entry, bool) {
			e, _ := optout.Retire(optedOut(f), "acme.sc.c2MtMQ")
			e, r := optout.Fold(e, true, in("o2", optout.OptOut, 20, sfC), f)
			return e, r.Changed
		}, want: want{state: optout.StateRetired, target: tg(false, false)}},
	})
}

func TestTarget(t *testing.T) {
	t.Parallel()
	b := func(v bool) *bool { return &v }
	opt := optout.Entry{SalesforceID: sfC, OptedOut: true, DecidedAt: at(10), LastOptOutAt: at(10)}
	resub := optout.Entry{SalesforceID: sfC, OptedOut: false, DecidedAt: at(20), LastOptOutAt: at(10)}
	never := optout.Entry{SalesforceID: sfC, OptedOut: false, DecidedAt: at(20)}
	with := func(e optout.Entry, mut func(*optout.Entry)) optout.Entry { mut(&e); return e }
	on := func(e optout.Entry, field string, conf *bool, setByUs bool) optout.Entry {
		e.Field, e.Confirmed, e.SetByUs = field, conf, setByUs
		return e
	}
	cases := []struct {
		name         string
		e            optout.Entry
		field        string
		value, write bool
	}{
		{"no Salesforce id: parked, never dirty", with(opt, func(e *optout.Entry) { e.SalesforceID = "" }), stdF, false, false},
		{"no Salesforce id: parked, never dirty", with(opt, func(e *optout.Entry) { e.SalesforceID = "" }), salesF, false, false},
		{"FAILED is not dirty", with(opt, func(e *optout.Entry) { e.State = optout.StateFailed }), stdF, false, false},
		{"FAILED is not dirty", with(opt, func(e *optout.Entry) { e.State = optout.StateFailed }), salesF, false, false},
		{"retired is not dirty", with(opt, func(e *optout.Entry) { e.MergedInto = "acme.sc.x" }), stdF, false, false},
		{"retired is not dirty", with(opt, func(e *optout.Entry) { e.MergedInto = "acme.sc.x" }), salesF, false, false},

		{"standard: opt-out, unknown", opt, stdF, true, true},
		{"standard: opt-out, confirmed false", on(opt, stdF, b(false), false), stdF, true, true},
		{"standard: opt-out, confirmed true", on(opt, stdF, b(true), true), stdF, true, false},
		{"standard: opt-out, confirmed on another field", on(opt, salesF, b(true), true), stdF, true, true},
		{"standard: resubscribed, confirmed true: never asks false", on(resub, stdF, b(true), true), stdF, true, false},
		{"standard: resubscribed, confirmed false: an opt-out is known", on(resub, stdF, b(false), false), stdF, true, true},
		{"standard: never opted out, confirmed true: never asks false", on(never, stdF, b(true), true), stdF, false, false},
		{"standard: never opted out, unknown", never, stdF, false, false},
		{"standard: cleared in Salesforce after the opt-out", on(with(resub, func(e *optout.Entry) { e.ClearedAt = at(15) }), stdF, b(true), false), stdF, false, false},
		{"standard: cleared as old as the opt-out", with(resub, func(e *optout.Entry) { e.ClearedAt = at(10) }), stdF, true, true},

		{"sales: opt-out, unknown", opt, salesF, true, true},
		{"sales: opt-out, confirmed false", on(opt, salesF, b(false), false), salesF, true, true},
		{"sales: opt-out, confirmed true", on(opt, salesF, b(true), true), salesF, true, false},
		{"sales: opt-out, confirmed true by someone else", on(opt, salesF, b(true), false), salesF, true, false},
		{"sales: opt-out, confirmed on the standard field", on(opt, stdF, b(true), true), salesF, true, true},
		{"sales: resubscribe, SetByUs, confirmed true", on(resub, salesF, b(true), true), salesF, false, true},
		{"sales: resubscribe, SetByUs, unknown", on(resub, salesF, nil, true), salesF, false, true},
		{"sales: resubscribe, SetByUs, confirmed false", on(resub, salesF, b(false), true), salesF, false, false},
		{"sales: resubscribe, not ours, confirmed true", on(resub, salesF, b(true), false), salesF, false, false},
		{"sales: resubscribe, not ours, unknown", on(resub, salesF, nil, false), salesF, false, false},
		{"sales: resubscribe, ours on the standard field", on(resub, stdF, b(true), true), salesF, false, false},
		{"sales: never opted out", never, salesF, false, false},
	}
	for _, c := range cases {
		t.Run(c.name+"/"+c.field, func(t *testing.T) {
			v, w := c.e.Target(c.field)
			if v != c.value || w != c.write {
				t.Errorf("Target = (%t, %t), want (%t, %t)", v, w, c.value, c.write)
			}
			if c.e.Dirty(c.field) != c.write {
				t.Errorf("Dirty = %t, want %t", c.e.Dirty(c.field), c.write)
			}
			if c.field == stdF && v == false && w {
				t.Errorf("asks to clear Email Opt Out")
			}
		})
	}
}
