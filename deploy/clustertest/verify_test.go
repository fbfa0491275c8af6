package clustertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

// verdict is the comparison of every person with the reference model.
type verdict struct {
	persons int
	// lost: Salesforce does not end at what the model wants and its field
	// changed at most once (the wish never reached it), or the ledger has
	// no entry for the person; reverted: it does not end there after
	// changing more than once (the wish was applied and then undone).
	lost, reverted int
	// ledgerMismatch: the person's ledger entry is not what the model says.
	ledgerMismatch int
	// Double effects: Salesforce changes beyond the person's desired
	// changes, Email Opt Out cleared from here, writes to a field the
	// tenant does not sync, and audit records beyond one per ledger change.
	sfDouble, clears, stray, auditDouble int
	auditMissing                         int
	dlq                                  uint64
	// Salesforce writes (records written), those that changed nothing, and
	// the most of any record.
	writes, redundant, maxPerRecord int
	// logMismatch: the write log does not explain a record's value (a
	// defect of the test's instrumentation, never of the product).
	logMismatch int
	examples    []string
}

func (v verdict) double() int { return v.sfDouble + v.clears + v.stray + v.auditDouble }

func (v verdict) String() string {
	s := fmt.Sprintf("%d persons: lost %d, reverted %d, double effects %d (Salesforce %d, Email Opt Out clears %d, stray writes %d, audit %d), audit records missing %d, ledger mismatches %d, DLQ %d; %d Salesforce record writes (%d changed nothing, at most %d on one record)",
		v.persons, v.lost, v.reverted, v.double(), v.sfDouble, v.clears, v.stray, v.auditDouble, v.auditMissing, v.ledgerMismatch, v.dlq, v.writes, v.redundant, v.maxPerRecord)
	if v.logMismatch > 0 {
		s += fmt.Sprintf("; %d records the write log does not explain", v.logMismatch)
	}
	return s
}

func (v *verdict) note(format string, args ...any) {
	if len(v.examples) < 40 {
		v.examples = append(v.examples, fmt.Sprintf(format, args...))
	}
}

// require fails the test unless nothing was lost, reverted or doubled.
func (v verdict) require(t *testing.T) {
	t.Helper()
	if v.lost+v.reverted+v.double()+v.auditMissing+v.ledgerMismatch+v.logMismatch > 0 || v.dlq > 0 {
		t.Fatalf("%s\n%s", v, strings.Join(v.examples, "\n"))
	}
}

// verify compares every person with the reference model: the record in
// Salesforce (and how it got there, from the write log), the ledger entry,
// and the audit trail of every ledger key.
func (cl *cluster) verify() verdict {
	t, ctx := cl.t, cl.ctx
	t.Helper()
	v := verdict{persons: len(cl.persons)}

	trails := map[string][]ledger.AuditRecord{}
	for _, tn := range tenants {
		if err := ledger.ReadAudit(ctx, cl.js, cl.topo, tn.name, func(r ledger.AuditRecord) error {
			trails[r.Key] = append(trails[r.Key], r)
			return nil
		}); err != nil {
			t.Fatalf("audit trail of %s: %v", tn.name, err)
		}
	}
	writes := map[string][]sfWrite{} // org/record → writes in applied order
	for _, w := range cl.writes.all() {
		org := cl.hostOrg[w.Host]
		writes[org+"/"+w.RecordID] = append(writes[org+"/"+w.RecordID], w)
	}

	for _, p := range cl.persons {
		field := cl.field[p.tenant]
		w := reference(p.events)
		rec, ok := cl.sb.Org(p.tenant).Get(p.sfID)
		if !ok {
			t.Fatalf("record %s of %s/%s is gone from the sandbox", p.sfID, p.tenant, p.sc)
		}
		got := rec.CustomOptOut
		if field == tenant.StandardField {
			got = rec.HasOptedOutOfEmail
		}
		ws := writes[p.tenant+"/"+p.sfID]
		n, last := flips(ws, field)
		if last != got {
			v.logMismatch++
			v.note("%s/%s: the write log ends at %t, the record holds %t", p.tenant, p.sc, last, got)
		}
		if got != w.value(field) {
			if n <= 1 {
				v.lost++
				v.note("LOST %s/%s (%s): %s is %t, the model wants %t (latest wish %t at %s); %d changes in Salesforce", p.tenant, p.sc, p.sfID, field, got, w.value(field), w.OptOut, w.DecidedAt, n)
			} else {
				v.reverted++
				v.note("REVERTED %s/%s (%s): %s is %t, the model wants %t; %d changes in Salesforce", p.tenant, p.sc, p.sfID, field, got, w.value(field), n)
			}
			v.note("  trail of %s/%s: %s", p.tenant, p.sc, trailOf(trails, p))
		}
		perRecord := 0
		prev := false
		for _, x := range ws {
			if !x.OK {
				continue
			}
			v.writes++
			perRecord++
			if x.Field != field {
				v.stray++
				v.note("STRAY %s/%s: %s=%t written; the tenant syncs %s", p.tenant, p.sc, x.Field, x.Value, field)
				continue
			}
			if x.Value == prev {
				v.redundant++
			}
			prev = x.Value
			if field == tenant.StandardField && !x.Value {
				v.clears++
				v.note("CLEARED %s/%s: HasOptedOutOfEmail=false written", p.tenant, p.sc)
			}
		}
		v.maxPerRecord = max(v.maxPerRecord, perRecord)

		key := ledger.Key(p.tenant, p.sc, "")
		sfKey := ledger.Key(p.tenant, "", p.sfID)
		pk, e, _, err := cl.lg.Person(ctx, key)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			v.lost++
			v.note("LOST %s/%s: no ledger entry", p.tenant, p.sc)
		case err != nil:
			t.Fatalf("ledger %s: %v", key, err)
		default:
			if msg := w.ledgerMatches(e, p, field); msg != "" {
				v.ledgerMismatch++
				v.note("LEDGER %s/%s (%s): %s", p.tenant, p.sc, pk, msg)
			}
		}
		if se, _, err := cl.lg.Get(ctx, sfKey); err == nil && se.MergedInto != pk {
			v.ledgerMismatch++
			v.note("LEDGER %s/%s: a second entry %s not merged into %s (merged into %q)", p.tenant, p.sc, sfKey, pk, se.MergedInto)
		} else if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("ledger %s: %v", sfKey, err)
		}
		if d := desiredChanges(map[string][]ledger.AuditRecord{key: trails[key], sfKey: trails[sfKey]}, p, field); n > d {
			v.sfDouble++
			v.note("DOUBLE %s/%s: %s changed %d times in Salesforce, the person's desired value %d times", p.tenant, p.sc, field, n, d)
			v.note("  trail of %s/%s: %s\n    Salesforce: %s", p.tenant, p.sc, trailOf(trails, p), writesOf(ws))
		}
	}

	for key, recs := range trails {
		e, _, err := cl.lg.Get(ctx, key)
		if err != nil {
			t.Fatalf("ledger %s: %v", key, err)
		}
		d, m := auditGaps(recs, e.Version)
		v.auditDouble += d
		v.auditMissing += m
		if d+m > 0 {
			v.note("AUDIT %s: %d records for %d changes (%d doubled, %d missing)", key, len(recs), e.Version, d, m)
		}
	}

	s, err := cl.js.Stream(ctx, cl.topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v.dlq = info.State.Msgs
	if v.dlq > 0 {
		v.note("DLQ holds %d messages", v.dlq)
	}
	return v
}

// trailOf tells a person's ledger history from the audit trail, for a
// failure report: every change's version, state, wish, confirmation and
// reason.
func trailOf(trails map[string][]ledger.AuditRecord, p *person) string {
	var out []string
	for _, key := range []string{ledger.Key(p.tenant, p.sc, ""), ledger.Key(p.tenant, "", p.sfID)} {
		for _, r := range trails[key] {
			e := r.Entry
			conf := "?"
			if e.Confirmed != nil {
				conf = fmt.Sprint(*e.Confirmed)
			}
			out = append(out, fmt.Sprintf("\n    %s v%d %s %s optedOut=%t decided=%s field=%s confirmed=%s setByUs=%t: %s",
				key[len(p.tenant)+1:], e.Version, e.ChangedAt.Format("15:04:05.000"), e.State, e.OptedOut, e.DecidedAt.Format("01-02T15:04"), e.Field, conf, e.SetByUs, e.Reason))
		}
	}
	return strings.Join(out, "")
}

// writesOf tells a record's successful writes in the order applied.
func writesOf(ws []sfWrite) string {
	var out []string
	for _, w := range ws {
		if w.OK {
			out = append(out, fmt.Sprintf("%s=%t", w.Field, w.Value))
		}
	}
	return strings.Join(out, ", ")
}
