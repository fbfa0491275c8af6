package tenant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

func TestTargetField(t *testing.T) {
	s := tenant.Default("acme")
	if got := s.TargetField(); got != "HasOptedOutOfEmail" {
		t.Errorf("default target = %s", got)
	}
	s.Field = tenant.SalesOptOut
	if got := s.TargetField(); got != "HasOptedOutOfEmail" {
		t.Errorf("sales field with sync disabled = %s; want HasOptedOutOfEmail", got)
	}
	s.SyncEnabled = true
	if got := s.TargetField(); got != tenant.DefaultCustomField {
		t.Errorf("sales field with sync enabled = %s", got)
	}
}

func TestCDCTopic(t *testing.T) {
	s := tenant.Default("acme")
	if got := s.Topic(); got != "/data/ChangeEvents" {
		t.Errorf("default CDC topic = %s", got)
	}
	for _, ok := range []string{"/data/ChangeEvents", "/data/ContactChangeEvent", "/data/OptOutSync__chn"} {
		s.CDCTopic = ok
		if err := s.Validate(); err != nil || s.Topic() != ok {
			t.Errorf("topic %s: %v", ok, err)
		}
	}
}

func TestValidateNamesEachBadField(t *testing.T) {
	s := tenant.Settings{Tenant: "a.b", Field: "EMAIL", CustomField: "Foo", ScheduleTime: "8pm", ScheduleZone: "Mars/Olympus", ConflictPolicy: "x", CDCTopic: "/event/Foo__e"}
	err := s.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`tenant "a.b"`, `field "EMAIL"`, `customField "Foo"`, `scheduleTime "8pm"`, `scheduleZone "Mars/Olympus"`, `conflictPolicy "x"`, `cdcTopic "/event/Foo__e"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
}

func TestCacheSeesChangesWithoutRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	st := tenant.Store{KV: p.Tenants}
	s := tenant.Default("acme")
	s.SyncEnabled = true
	if err := st.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	c, err := tenant.Watch(ctx, p.Tenants)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Get("acme").SyncEnabled {
		t.Fatal("cache missed the stored settings")
	}
	s.Field = tenant.SalesOptOut
	if err := st.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	for c.Get("acme").Field != tenant.SalesOptOut {
		select {
		case <-ctx.Done():
			t.Fatal("cache never saw the change")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got := c.Get("unknown").Field; got != tenant.EmailOptOut {
		t.Errorf("unknown tenant field = %s; want the default", got)
	}
	if err := st.Put(ctx, tenant.Settings{Tenant: "bad"}); err == nil {
		t.Error("invalid settings were stored")
	}
}
