package tenant_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestPutIfRevisionRefusesAStaleWrite(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := natstest.Provision(t, natstest.Connect(t))
	st := tenant.Store{KV: p.Tenants}

	s, rev, err := st.GetRevision(ctx, "acme")
	if err != nil || rev != 0 || s != tenant.Default("acme") {
		t.Fatalf("unstored tenant: %+v rev %d err %v; want defaults at revision 0", s, rev, err)
	}
	s.SyncEnabled = true
	rev1, err := st.PutIfRevision(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second writer that also read revision 0 must not overwrite.
	if _, err := st.PutIfRevision(ctx, tenant.Default("acme"), 0); !errors.Is(err, tenant.ErrChanged) {
		t.Fatalf("create over an existing key: err %v; want ErrChanged", err)
	}
	s.Field = tenant.SalesOptOut
	if _, err := st.PutIfRevision(ctx, s, rev1); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutIfRevision(ctx, s, rev1); !errors.Is(err, tenant.ErrChanged) {
		t.Fatalf("update at an old revision: err %v; want ErrChanged", err)
	}
	bad := s
	bad.ScheduleTime = "25:00"
	if _, err := st.PutIfRevision(ctx, bad, 0); err == nil || errors.Is(err, tenant.ErrChanged) {
		t.Fatalf("invalid settings: err %v; want a validation error", err)
	}
}

func TestUpdateKeepsEveryConcurrentChange(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := natstest.Provision(t, natstest.Connect(t))
	st := tenant.Store{KV: p.Tenants}

	// Two operators change different settings at once; neither change is lost.
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, _, err := st.Update(ctx, "acme", func(s *tenant.Settings) error { s.SyncEnabled = true; return nil }); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		if _, _, err := st.Update(ctx, "acme", func(s *tenant.Settings) error { s.ScheduleTime = "21:30"; return nil }); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	got, err := st.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !got.SyncEnabled || got.ScheduleTime != "21:30" {
		t.Fatalf("settings = %+v; want both changes", got)
	}
}
