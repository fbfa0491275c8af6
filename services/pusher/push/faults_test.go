package push_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// TestFaultsEndWithEveryOptOutAppliedExactly injects every transient and
// tenant-level fault; all opt-outs must end applied, none dead-lettered.
func TestFaultsEndWithEveryOptOutAppliedExactly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		inject func(s *stack, ids []string)
		heal   func(s *stack)
		mode   tenant.Mode // the tenant's state while a tenant-level fault lasts
	}{
		{"503 burst", func(s *stack, _ []string) {
			s.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy", Times: 4})
		}, nil, ""},
		// The sales field is written by one composite: an edge page answers
		// it as a whole (faults on the collections route hit its write
		// subrequest inside it).
		{"503 html", func(s *stack, _ []string) {
			s.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteComposite, Status: 503, HTML: true, Times: 2})
		}, nil, ""},
		{"401 mid-run", func(s *stack, _ []string) { s.Org("acme").ExpireTokens() }, nil, ""},
		{"record lock", func(s *stack, ids []string) {
			s.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, RecordID: ids[1], ErrorCode: "UNABLE_TO_LOCK_ROW", Times: 2})
		}, nil, ""},
		{"dropped after write", func(s *stack, _ []string) {
			s.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteCollectionsUpdate, DropAfterWrite: true, Times: 1})
		}, nil, ""},
		{"composite dropped after write", func(s *stack, _ []string) {
			s.Org("acme").InjectFault(sandbox.Fault{Route: sandbox.RouteComposite, DropAfterWrite: true, Times: 1})
		}, nil, ""},
		{"quota exhausted then restored", func(s *stack, _ []string) {
			s.Org("acme").SetAPIUsage(100000)
		}, func(s *stack) { s.Org("acme").SetAPIUsage(0) }, tenant.ModePaused},
		{"field removed then restored", func(s *stack, _ []string) {
			s.Org("acme").SetCustomField(false, false)
		}, func(s *stack) { s.Org("acme").SetCustomField(true, true) }, tenant.ModeUnhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t)
			s.PutSettings("acme", func(st *tenant.Settings) { st.SyncEnabled = true; st.Field = tenant.SalesOptOut })
			ids := make([]string, 5)
			for i := range ids {
				ids[i] = s.seed("acme", "Contact")
			}
			tc.inject(s, ids)
			s.start(fastConfig())
			for i, id := range ids {
				s.publish("acme", "sc-"+id, sfID(id))
				if i == 2 {
					time.Sleep(30 * time.Millisecond) // two batches: faults hit mid-run
				}
			}
			if tc.heal != nil {
				s.Eventually("tenant "+string(tc.mode), 10*time.Second, func() bool {
					h, err := s.Health.Get(s.Ctx, "acme")
					return err == nil && h.Mode == tc.mode
				})
				for _, id := range ids {
					if s.optedOut("acme", id, sales) {
						t.Fatalf("record %s written while the fault was active", id)
					}
				}
				if len(s.dlq("acme")) != 0 {
					t.Fatal("a tenant-level fault sent messages to the DLQ")
				}
				tc.heal(s)
			}
			s.Eventually("every opt-out applied", 20*time.Second, func() bool {
				for _, id := range ids {
					if !s.optedOut("acme", id, sales) {
						return false
					}
				}
				return true
			})
			s.Eventually("every message acked and every person settled", 20*time.Second, func() bool { return s.Settled("acme") })
			if d := s.dlq("acme"); len(d) != 0 {
				t.Fatalf("DLQ holds %d messages; transient and tenant faults must not dead-letter", len(d))
			}
			for _, id := range ids {
				if e := s.entry("acme", "sc-"+id); e.Confirmed == nil || !*e.Confirmed {
					t.Errorf("ledger for %s not confirmed: %+v", id, e)
				}
			}
		})
	}
}

// blockingClients performs each write, then never answers: a worker that
// died after Salesforce applied the batch and before anything was acked.
type blockingClients struct {
	inner *sfcreds.Pool
	stop  chan struct{}
}

type blockingClient struct {
	sfcreds.Client
	stop chan struct{}
}

func (b blockingClients) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	c, err := b.inner.Get(ctx, t)
	if err != nil {
		return nil, err
	}
	return blockingClient{c, b.stop}, nil
}

func (b blockingClient) UpdateOptOut(ctx context.Context, u []salesforce.Update) ([]salesforce.Result, error) {
	_, _ = b.Client.UpdateOptOut(ctx, u)
	<-b.stop
	return nil, context.Canceled
}

func (b blockingClient) ReadAndUpdate(ctx context.Context, u []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	_, _ = b.Client.ReadAndUpdate(ctx, u)
	<-b.stop
	return nil, context.Canceled
}

func TestWorkerKilledMidBatchLosesNothingAndDoesNothingTwice(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = s.seed("acme", "Contact")
		s.publish("acme", "sc-"+ids[i], sfID(ids[i]))
	}
	stuck := make(chan struct{})
	defer close(stuck)
	s.startWith(fastConfig(), blockingClients{inner: s.Clients, stop: stuck})
	s.Eventually("the dying worker wrote its batch", 10*time.Second, func() bool { return s.writeCalls("acme") >= 1 })
	scs := make([]string, len(ids))
	for i, id := range ids {
		scs[i] = "sc-" + id
	}
	s.Eventually("events folded into the ledger", 10*time.Second, func() bool { return s.folded("acme", scs...) })
	// The hanging batch holds its persons' events unacked, and marks them
	// dirty once it outlasts the hold: every replica's sweep finds them.
	s.Eventually("the hanging batch's persons marked dirty", 10*time.Second, func() bool {
		n := 0
		if err := s.Ledger.Dirty(s.Ctx, "acme", func(ledger.DirtyItem) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})

	// A healthy replica finds the dirty persons in the ledger's dirty set.
	s.start(fastConfig())
	s.Eventually("all pushed by the new replica", 20*time.Second, func() bool { return s.Settled("acme") })
	for _, id := range ids {
		if !s.optedOut("acme", id, tenant.StandardField) {
			t.Errorf("%s not opted out", id)
		}
		if e := s.entry("acme", "sc-"+id); len(e.RecentEvents) != 1 || e.Confirmed == nil || !*e.Confirmed {
			t.Errorf("ledger for %s applied %d events (confirmed %v); want exactly one", id, len(e.RecentEvents), e.Confirmed)
		}
	}
	if len(s.dlq("acme")) != 0 {
		t.Error("redelivery produced dead letters")
	}
}

// A replica that dies after Salesforce applied its opt-out on the sales
// field, and before it recorded anything, must not leave the mark looking
// like someone else's: the next round found the field already true and
// recorded it "set in Salesforce (not by optout-sync)", so a newer
// resubscribe left it set. (Found by make test-cluster, whose kills and
// leader elections land between writes and their confirmations.)
func TestReplicaKilledAfterItsWriteLandedLetsAResubscribeClearIt(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.salesField()
	c := s.seed("acme", "Contact")
	t0 := time.Now().Add(-time.Hour)
	s.publish("acme", "p", sfID(c), at(t0))
	stuck := make(chan struct{})
	defer close(stuck)
	s.startWith(fastConfig(), blockingClients{inner: s.Clients, stop: stuck})
	s.Eventually("the dying replica's write landed", 10*time.Second, func() bool { return s.optedOut("acme", c, sales) })
	s.Eventually("the opt-out folded", 10*time.Second, func() bool { return s.folded("acme", "p") })

	s.start(fastConfig())
	s.publish("acme", "p", sfID(c), at(t0.Add(time.Minute)), resub())
	s.Eventually("the newer resubscribe cleared our mark", 20*time.Second, func() bool {
		return s.Settled("acme") && !s.optedOut("acme", c, sales)
	})
	if e := s.entry("acme", "p"); e.OptedOut || e.Confirmed == nil || *e.Confirmed {
		t.Errorf("ledger: opted out %t, confirmed %v; want the resubscribe confirmed (%s)", e.OptedOut, e.Confirmed, e.Reason)
	}
}

func TestOneTenantsOutageDoesNotDelayAnother(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := fastConfig()
	cfg.Workers = 2
	s.start(cfg)
	s.Org("acme").InjectFault(sandbox.Fault{Status: 503, ErrorCode: "SERVER_UNAVAILABLE", Message: "Server too busy"})
	var acme, globex []string
	for i := 0; i < 30; i++ {
		a, g := s.seed("acme", "Contact"), s.seed("globex", "Contact")
		acme, globex = append(acme, a), append(globex, g)
		s.publish("acme", "a-"+a, sfID(a))
		s.publish("globex", "g-"+g, sfID(g))
	}
	s.Eventually("globex applied while acme is down", 5*time.Second, func() bool {
		for _, id := range globex {
			if !s.optedOut("globex", id, std) {
				return false
			}
		}
		return true
	})
	s.Eventually("acme's breaker opened", 5*time.Second, func() bool {
		h, err := s.Health.Get(s.Ctx, "acme")
		return err == nil && h.Mode == tenant.ModeBackoff
	})
	s.Org("acme").ClearFaults()
	s.Eventually("acme applied after recovery", 20*time.Second, func() bool {
		for _, id := range acme {
			if !s.optedOut("acme", id, std) {
				return false
			}
		}
		return true
	})
	if len(s.dlq("acme")) != 0 {
		t.Error("an outage dead-lettered opt-outs")
	}
}

// hangingClients holds every write of one tenant until release is closed,
// counting how many it holds at once.
type hangingClients struct {
	inner   *sfcreds.Pool
	tenant  string
	release chan struct{}
	held    atomic.Int32
	maxHeld atomic.Int32
}

func (h *hangingClients) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	c, err := h.inner.Get(ctx, t)
	if err != nil || t != h.tenant {
		return c, err
	}
	return hangingClient{c, h}, nil
}

type hangingClient struct {
	sfcreds.Client
	h *hangingClients
}

func (c hangingClient) UpdateOptOut(ctx context.Context, u []salesforce.Update) ([]salesforce.Result, error) {
	n := c.h.held.Add(1)
	for m := c.h.maxHeld.Load(); n > m && !c.h.maxHeld.CompareAndSwap(m, n); m = c.h.maxHeld.Load() {
	}
	defer c.h.held.Add(-1)
	<-c.h.release
	return c.Client.UpdateOptOut(ctx, u)
}

func (c hangingClient) ReadAndUpdate(ctx context.Context, u []salesforce.ReadUpdate) ([]salesforce.ReadResult, error) {
	n := c.h.held.Add(1)
	for m := c.h.maxHeld.Load(); n > m && !c.h.maxHeld.CompareAndSwap(m, n); m = c.h.maxHeld.Load() {
	}
	defer c.h.held.Add(-1)
	<-c.h.release
	return c.Client.ReadAndUpdate(ctx, u)
}

// A tenant whose Salesforce calls hang takes at most its own share of the
// worker pool: another tenant's opt-outs are written meanwhile.
func TestAHangingTenantCannotTakeEveryWorker(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := fastConfig()
	cfg.Workers, cfg.TenantConcurrency, cfg.BatchSize = 3, 2, 5
	hang := &hangingClients{inner: s.Clients, tenant: "acme", release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(hang.release)
		}
	}
	defer release()
	s.startWith(cfg, hang)
	var acme []string
	for range 40 { // eight batches: more than every worker could take
		id := s.seed("acme", "Contact")
		acme = append(acme, id)
		s.publish("acme", "a-"+id, sfID(id))
	}
	s.Eventually("acme's calls hang", 10*time.Second, func() bool { return hang.held.Load() == int32(cfg.TenantConcurrency) })
	g := s.seed("globex", "Contact")
	s.publish("globex", "g", sfID(g))
	s.Eventually("globex written while acme hangs", 10*time.Second, func() bool { return s.optedOut("globex", g, std) })
	if m := hang.maxHeld.Load(); m > int32(cfg.TenantConcurrency) {
		t.Errorf("acme held %d calls at once; want at most its concurrency of %d", m, cfg.TenantConcurrency)
	}
	release()
	s.Eventually("acme written once its Salesforce answers", 20*time.Second, func() bool {
		for _, id := range acme {
			if !s.optedOut("acme", id, std) {
				return false
			}
		}
		return s.Settled("acme")
	})
}

// hangingTenant hangs one tenant's Salesforce writes (after they land, as
// blockingClient does) and leaves every other tenant's alone.
type hangingTenant struct {
	inner  *sfcreds.Pool
	tenant string
	stop   chan struct{}
}

func (h hangingTenant) Get(ctx context.Context, t string) (sfcreds.Client, error) {
	c, err := h.inner.Get(ctx, t)
	if err != nil || t != h.tenant {
		return c, err
	}
	return blockingClient{c, h.stop}, nil
}

// A tenant whose Salesforce hangs holds at most a quarter of the shared
// consumer's unacknowledged window: its other events are folded with their
// dirty markers and acked at once. Held without that cap, they filled the
// window, and no other tenant's event was delivered while the calls hung.
func TestAHangingTenantHoldsNoMoreThanItsShareOfTheWindow(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Topo.PusherMaxAckPending = 8 // a tenant holds at most 2
	ids := make([]string, 12)
	scs := make([]string, len(ids))
	for i := range ids {
		ids[i] = s.seed("acme", "Contact")
		scs[i] = "sc-" + ids[i]
		s.publish("acme", scs[i], sfID(ids[i]))
	}
	stuck := make(chan struct{})
	release := sync.OnceFunc(func() { close(stuck) })
	stopHanging := s.startWith(fastConfig(), hangingTenant{inner: s.Clients, tenant: "acme", stop: stuck})
	// Cleanups run last-registered first: a failed test releases the
	// hanging calls before waiting for the replica to stop.
	t.Cleanup(release)
	s.Eventually("acme's events folded", 10*time.Second, func() bool { return s.folded("acme", scs...) })

	g := s.seed("globex", "Contact")
	s.publish("globex", "g", sfID(g))
	s.Eventually("globex's opt-out in Salesforce while acme's calls hang", 10*time.Second, func() bool {
		return s.optedOut("globex", g, tenant.StandardField)
	})
	if inFlight, _ := s.PendingAcks("acme"); inFlight > 2 {
		t.Errorf("acme holds %d events unacked; want at most 2 (a quarter of MaxAckPending 8)", inFlight)
	}

	// Nothing of acme's is lost: a healthy replica pushes every person.
	release()
	stopHanging()
	s.start(fastConfig())
	s.Eventually("acme settled by a healthy replica", 20*time.Second, func() bool { return s.Settled("acme") })
	for _, id := range ids {
		if e := s.entry("acme", "sc-"+id); !s.optedOut("acme", id, tenant.StandardField) || e.Confirmed == nil || !*e.Confirmed {
			t.Errorf("%s: opted out in Salesforce %v, confirmed in the ledger %v; want both", id, s.optedOut("acme", id, tenant.StandardField), e.Confirmed)
		}
	}
}
