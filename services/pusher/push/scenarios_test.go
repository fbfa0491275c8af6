package push_test

// End-to-end tests of the scenarios of issue 10 (real NATS, the sandbox):
// each asserts what a user sees (the record in Salesforce, the ledger entry,
// the DLQ) and each failed on the design before the redesign.

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// noSC makes the event carry only its Salesforce id.
func noSC() evOpt {
	return func(e *optoutv1.OptOutEvent) { e.Person.SalesConnectId, e.Person.Email = "", "" }
}

// salesField makes acme sync to the sales opt-out field.
func (s *stack) salesField() {
	s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
}

// redeliver sends event id again under another Nats-Msg-Id, as a
// redelivery (or a replay beyond the duplicate window) arrives. opts must
// rebuild the original event.
func (s *stack) redeliver(tenantID, sc, id string, opts ...evOpt) {
	s.t.Helper()
	ev := &optoutv1.OptOutEvent{
		EventId: id, TenantId: tenantID,
		Person:     &optoutv1.Person{SalesConnectId: sc, Email: sc + "@example.com"},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Now().Add(-time.Second)),
		Source:     optoutv1.Source_EMAIL_LINK,
	}
	for _, o := range opts {
		o(ev)
	}
	data, ctype, err := event.Encode(ev, false)
	if err != nil {
		s.t.Fatal(err)
	}
	m := nats.NewMsg(s.Topo.EventsSubject(tenantID))
	m.Data = data
	m.Header.Set(event.HeaderContentType, ctype)
	if _, err := s.pub.Publish(s.Ctx, m, id+"-redelivered"); err != nil {
		s.t.Fatal(err)
	}
}

// dropCreds removes a tenant's SF_<TENANT>_* variables and returns a
// function that puts them back.
func (s *stack) dropCreds(tenantID string) (restore func()) {
	prefix := "SF_" + strings.ToUpper(tenantID) + "_"
	saved := s.Env.Cut(prefix)
	if len(saved) == 0 {
		s.t.Fatalf("no %s* credentials to remove", prefix)
	}
	return func() {
		for k, v := range saved {
			s.Env.Set(k, v)
		}
	}
}

func (s *stack) health(tenantID string) tenant.Health {
	h, _ := s.Health.Get(s.Ctx, tenantID)
	return h
}

// pushedOnce opts sc out on the sales field at t0 and waits until Salesforce
// confirmed it, so our mark exists; the pusher is stopped afterwards.
func (s *stack) pushedOnce(sc, id string, t0 time.Time) {
	s.t.Helper()
	stop := s.start(fastConfig())
	s.publish("acme", sc, sfID(id), at(t0))
	s.Eventually("first opt-out pushed and confirmed", 10*time.Second, func() bool {
		if !s.Settled("acme") || !s.optedOut("acme", id, sales) {
			return false
		}
		e := s.entry("acme", sc)
		return e.Confirmed != nil && *e.Confirmed && e.SetByUs
	})
	stop()
}

// Old design: the opt-out was acked as "nothing to write" (the entry said confirmed) while the batch wrote the resubscribe's false from its own snapshot and confirmed() stored it, so Salesforce ended false; the mirror case dropped the resubscribe.
func TestScenarioResubscribeAndOptOutProcessedTogether(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"same batch", "two replicas", "redelivery", "mid-write"} {
		for _, newest := range []string{"opt-out newest", "resubscribe newest"} {
			if how == "mid-write" && newest == "resubscribe newest" {
				continue // the older opt-out alone writes nothing: no write to land in
			}
			t.Run(how+"/"+newest, func(t *testing.T) {
				t.Parallel()
				s := newStack(t)
				s.salesField()
				c := s.seed("acme", "Contact")
				t0 := time.Now().Add(-time.Hour)
				s.pushedOnce("p", c, t0)

				want := newest == "opt-out newest"
				first, second := []evOpt{sfID(c), at(t0.Add(time.Minute))}, []evOpt{sfID(c), at(t0.Add(2 * time.Minute))}
				if want {
					first = append(first, resub())
				} else {
					second = append(second, resub())
				}
				if how == "mid-write" {
					// The newer opt-out is folded while the resubscribe's write is in flight.
					s.Org("acme").SetLatency(400 * time.Millisecond)
					var inFlight atomic.Int32
					s.startWith(fastConfig(), countingClients{inner: s.Clients, n: &inFlight})
					s.publish("acme", "p", first...)
					s.Eventually("resubscribe's write in flight", 10*time.Second, func() bool { return inFlight.Load() > 0 })
					s.publish("acme", "p", second...)
				} else {
					firstID := s.publish("acme", "p", first...)
					s.publish("acme", "p", second...)
					if how == "redelivery" {
						s.redeliver("acme", "p", firstID, first...)
					}
					s.start(fastConfig())
					if how == "two replicas" {
						s.start(fastConfig())
					}
				}
				s.Eventually("settled at the newest wish", 15*time.Second, func() bool {
					return s.Settled("acme") && s.optedOut("acme", c, sales) == want && s.entry("acme", "p").OptedOut == want
				})
				e := s.entry("acme", "p")
				if e.State != optout.StateSynced || e.Confirmed == nil || *e.Confirmed != want || !e.DecidedAt.Equal(t0.Add(2*time.Minute).UTC()) {
					t.Fatalf("entry = %+v; want synced and confirmed %t, decided by the newest event", e, want)
				}
				if got := s.optedOut("acme", c, sales); got != want {
					t.Fatalf("Salesforce sales field = %t; want %t (the newest wish)", got, want)
				}
				if d := s.dlq("acme"); len(d) != 0 {
					t.Fatalf("DLQ holds %d messages", len(d))
				}
			})
		}
	}
}

// Old design: a resubscribe stamped 20 h ahead made every real opt-out of
// the next 20 h "older": acked and never written.
func TestScenarioClockSkewedPublisher(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.salesField()
	s.start(fastConfig())
	c := s.seed("acme", "Contact")
	future := time.Now().Add(20 * time.Hour)
	resubID := s.publish("acme", "p", sfID(c), resub(), at(future))
	s.Eventually("skewed resubscribe folded", 10*time.Second, func() bool {
		return s.Settled("acme") && s.entry("acme", "p").LastEvent != nil
	})
	e := s.entry("acme", "p")
	if e.LastEvent.ID != resubID || e.LastEvent.OrderedAt.IsZero() || !e.LastEvent.OrderedAt.Before(time.Now().Add(time.Minute)) {
		t.Fatalf("last event = %+v; want the resubscribe ordered by its storage time", e.LastEvent)
	}
	if !strings.Contains(e.Reason, "ordered by the storage time") {
		t.Errorf("reason = %q; want it to record the clamp", e.Reason)
	}
	if n := s.metrics.Clamped.Load(); n != 1 {
		t.Errorf("Metrics.Clamped = %d; want 1", n)
	}
	// The audit trail has the clamped stamp too.
	s.Eventually("clamp in the audit trail", 10*time.Second, func() bool {
		found := false
		err := ledger.ReadPersonAudit(s.Ctx, s.Prov.JS, s.Topo, optout.Key("acme", "p", ""), func(r ledger.AuditRecord) error {
			if r.Entry.LastEvent != nil && r.Entry.LastEvent.ID == resubID && !r.Entry.LastEvent.OrderedAt.IsZero() {
				found = true
			}
			return nil
		})
		return err == nil && found
	})

	optID := s.publish("acme", "p", sfID(c), at(time.Now()))
	s.Eventually("the real opt-out wins", 10*time.Second, func() bool {
		return s.Settled("acme") && s.optedOut("acme", c, sales)
	})
	if e := s.entry("acme", "p"); !e.OptedOut || e.DecidedBy != optID || e.State != optout.StateSynced {
		t.Fatalf("entry = %+v; want the opt-out deciding, synced", e)
	}
	if n := s.metrics.Clamped.Load(); n != 1 {
		t.Errorf("Metrics.Clamped = %d after a correctly stamped opt-out; want 1", n)
	}
}

// Old design: a Salesforce-only opt-out landed in sf.<id> beside the
// person's sc.<id> entry, whose older state let an older resubscribe carrying
// both ids clear the field (and the two entries were never merged).
func TestScenarioOnePersonUnderTwoKeys(t *testing.T) {
	t.Parallel()
	t.Run("linked first", func(t *testing.T) {
		t.Parallel()
		s := newStack(t)
		s.salesField()
		s.start(fastConfig())
		c := s.seed("acme", "Contact")
		t0 := time.Now().Add(-time.Hour)
		s.publish("acme", "p", sfID(c), at(t0))
		s.Eventually("first opt-out pushed", 10*time.Second, func() bool { return s.Settled("acme") && s.optedOut("acme", c, sales) })
		// A newer opt-out carrying only the Salesforce id, then an older
		// resubscribe carrying both.
		s.publish("acme", "", noSC(), sfID(c), at(t0.Add(2*time.Minute)))
		s.Eventually("Salesforce-only opt-out folded", 10*time.Second, func() bool { return s.Settled("acme") })
		s.publish("acme", "p", sfID(c), resub(), at(t0.Add(time.Minute)))
		s.Eventually("resubscribe folded", 10*time.Second, func() bool {
			return s.Settled("acme") && s.entry("acme", "p").LastEvent.Action == string(optout.Resubscribe)
		})
		if !s.optedOut("acme", c, sales) {
			t.Fatal("an older resubscribe cleared the sales field")
		}
		if e := s.entry("acme", "p"); !e.OptedOut || !e.DecidedAt.Equal(t0.Add(2*time.Minute).UTC()) || e.State != optout.StateSynced {
			t.Fatalf("person = %+v; want the newer Salesforce-only opt-out deciding", e)
		}
		s.oneLiveEntry(c)
	})
	t.Run("Salesforce id first", func(t *testing.T) {
		t.Parallel()
		s := newStack(t)
		s.salesField()
		s.start(fastConfig())
		c := s.seed("acme", "Contact")
		t0 := time.Now().Add(-time.Hour)
		// Sales Connect knows the person without a Salesforce id yet (an older state).
		s.publish("acme", "p", at(t0))
		s.Eventually("parked", 10*time.Second, func() bool { return s.Settled("acme") })
		// A Salesforce-only opt-out: its own ledger key, pushed.
		s.publish("acme", "", noSC(), sfID(c), at(t0.Add(2*time.Minute)))
		s.Eventually("Salesforce-only opt-out pushed", 10*time.Second, func() bool {
			return s.Settled("acme") && s.optedOut("acme", c, sales)
		})
		// An older resubscribe carrying both ids links them.
		s.publish("acme", "p", sfID(c), resub(), at(t0.Add(time.Minute)))
		s.Eventually("linked", 10*time.Second, func() bool {
			return s.Settled("acme") && s.entry("acme", "p").SalesforceID == c
		})
		if !s.optedOut("acme", c, sales) {
			t.Fatal("an older resubscribe cleared the sales field")
		}
		person := s.entry("acme", "p")
		if !person.OptedOut || person.State != optout.StateSynced || !person.DecidedAt.Equal(t0.Add(2*time.Minute).UTC()) {
			t.Fatalf("person = %+v; want the newer opt-out, synced on %s", person, c)
		}
		it, err := s.Ledger.Get(s.Ctx, optout.Key("acme", "", c))
		sf := it.Entry
		if err != nil || sf.MergedInto != optout.Key("acme", "p", "") || sf.State != optout.StateRetired {
			t.Fatalf("sf entry = %+v (%v); want retired into the person", sf, err)
		}
		s.oneLiveEntry(c)
		// A writer racing the merge can leave a marker on the retired
		// entry, which no later write of that entry removes: the sweep does.
		if _, err := s.Prov.Dirty.Put(s.Ctx, optout.Key("acme", "", c), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		s.Eventually("the retired entry's marker cleared", 10*time.Second, func() bool { return s.Settled("acme") })
	})
}

// oneLiveEntry checks that exactly one unretired acme entry holds id.
func (s *stack) oneLiveEntry(id string) {
	s.t.Helper()
	live := 0
	if err := s.Ledger.Scan(s.Ctx, "acme", func(it ledger.ScanItem) error {
		if it.Entry.MergedInto == "" && it.Entry.SalesforceID == id {
			live++
		}
		return nil
	}, func(key string, err error) { s.t.Errorf("%s: %v", key, err) }); err != nil {
		s.t.Fatal(err)
	}
	if live != 1 {
		s.t.Fatalf("%d live entries for %s; want one", live, id)
	}
}

// Old design: a tenant without credentials held its events unacked in the
// events stream, so MaxAge (or a purge) lost the opt-out: no stream, no
// ledger, no DLQ.
func TestScenarioHeldEventsDoNotAgeOut(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	restore := s.dropCreds("globex")
	s.start(fastConfig())
	c := s.seed("globex", "Contact")
	s.publish("globex", "p", sfID(c))
	s.Eventually("held and folded into the ledger", 10*time.Second, func() bool {
		h := s.health("globex")
		return s.Drained("globex") && h.Mode == tenant.ModeUnhealthy && s.entry("globex", "p").State == optout.StatePending
	})
	st, err := s.Prov.JS.Stream(s.Ctx, s.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(s.Ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(s.Ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("events stream after purge: %+v, %v", info, err)
	}
	restore()
	s.Eventually("opt-out reaches Salesforce", 15*time.Second, func() bool {
		return s.Settled("globex") && s.optedOut("globex", c, std)
	})
	if e := s.entry("globex", "p"); e.State != optout.StateSynced || e.Confirmed == nil || !*e.Confirmed {
		t.Fatalf("entry = %+v", e)
	}
	if len(s.dlq("globex")) != 0 {
		t.Fatal("dead-lettered")
	}
}

// Old design: the horizon ran from publish time, so after a hold longer
// than the horizon the first transient 503 dead-lettered the opt-out.
func TestScenarioRetryHorizonFromFirstFailure(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	restore := s.dropCreds("globex")
	cfg := fastConfig()
	cfg.RetryHorizon = 2 * time.Second
	s.start(cfg)
	c := s.seed("globex", "Contact")
	s.publish("globex", "p", sfID(c))
	s.Eventually("held", 10*time.Second, func() bool {
		return s.Drained("globex") && s.health("globex").Mode == tenant.ModeUnhealthy
	})
	time.Sleep(3 * time.Second) // the hold outlasts the horizon
	if e := s.entry("globex", "p"); e.Retry.Attempts != 0 || !e.Retry.FirstFailure.IsZero() {
		t.Fatalf("retry clock ran while the tenant was held: %+v", e.Retry)
	}
	s.Org("globex").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy", Times: 1})
	restore()
	s.Eventually("retried and landed", 15*time.Second, func() bool {
		return s.Settled("globex") && s.optedOut("globex", c, std)
	})
	failed := 0
	for _, call := range s.Org("globex").Calls() {
		if call.Route == sandbox.RouteCollectionsUpdate && call.Status == 503 {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d collections calls answered 503; want the injected one", failed)
	}
	if d := s.dlq("globex"); len(d) != 0 {
		t.Fatalf("DLQ holds %d messages (code %q)", len(d), first(d))
	}
	if e := s.entry("globex", "p"); e.State != optout.StateSynced || e.Retry.Attempts != 0 {
		t.Fatalf("entry = %+v; want synced with the retry state cleared", e)
	}
}

// Old design: following a conversion recorded the Contact's copied true as
// someone else's, so the Lead's later resubscribe could not clear our mark.
func TestScenarioConvertedLeadResubscribeClearsOurMarkOnTheContact(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.salesField()
	s.start(fastConfig())
	lead := s.seed("acme", "Lead")
	t0 := time.Now().Add(-time.Hour)
	s.publish("acme", "p", sfID(lead), at(t0))
	s.Eventually("Lead opted out", 10*time.Second, func() bool { return s.Settled("acme") && s.optedOut("acme", lead, sales) })
	contact, err := s.Org("acme").ConvertLead(lead)
	if err != nil {
		t.Fatal(err)
	}
	if !contact.CustomOptOut {
		t.Fatal("the conversion did not copy the sales opt-out to the Contact")
	}
	s.publish("acme", "p", sfID(lead), at(t0.Add(time.Minute)))
	s.Eventually("newer opt-out settled", 10*time.Second, func() bool { return s.Settled("acme") })
	if !s.optedOut("acme", contact.ID, sales) {
		t.Fatal("Contact not opted out")
	}
	s.publish("acme", "p", sfID(lead), resub(), at(t0.Add(2*time.Minute)))
	s.Eventually("Contact's sales field cleared", 15*time.Second, func() bool {
		return s.Settled("acme") && !s.optedOut("acme", contact.ID, sales)
	})
	e := s.entry("acme", "p")
	if e.OptedOut || e.SalesforceID != contact.ID || e.State != optout.StateSynced {
		t.Fatalf("entry = %+v; want resubscribed, on Contact %s, synced", e, contact.ID)
	}
	if d := s.dlq("acme"); len(d) != 0 {
		t.Fatalf("DLQ holds %d messages (code %q)", len(d), first(d))
	}
}
