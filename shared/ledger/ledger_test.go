package ledger_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

func TestConcurrentUpdatesAreAllKeptAndAudited(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	l := &ledger.Ledger{KV: p.Ledger, JS: p.JS, AuditSubject: p.Topology.AuditSubject}
	key := ledger.Key("acme", "sc-1", "")

	// Sixteen writers race on one person; compare-and-set must keep every event.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Update(ctx, key, func(e *ledger.Entry, _ bool) (bool, error) {
				e.Tenant = "acme"
				e.Remember(string(rune('a' + i)))
				return true, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	e, _, err := l.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.RecentEvents) != 16 {
		t.Fatalf("entry remembers %d events; want all 16 concurrent updates", len(e.RecentEvents))
	}

	// An update that changes nothing writes nothing.
	if _, err := l.Update(ctx, key, func(*ledger.Entry, bool) (bool, error) { return false, nil }); err != nil {
		t.Fatal(err)
	}
	s, err := p.JS.Stream(ctx, p.Topology.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 16 {
		t.Fatalf("audit stream holds %d records; want one per change (16)", info.State.Msgs)
	}
	msg, err := s.GetLastMsgForSubject(ctx, p.Topology.AuditSubject("acme"))
	if err != nil {
		t.Fatal(err)
	}
	var rec ledger.AuditRecord
	if err := json.Unmarshal(msg.Data, &rec); err != nil || rec.Key != key || rec.Revision == 0 {
		t.Fatalf("audit record %s: %v", msg.Data, err)
	}
}

func TestGetUnknownPerson(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t)
	p := natstest.Provision(t, nc)
	l := &ledger.Ledger{KV: p.Ledger}
	if _, _, err := l.Get(context.Background(), ledger.Key("acme", "", "003RO0000035WQgYAM")); err != ledger.ErrNotFound {
		t.Fatalf("err = %v; want ErrNotFound", err)
	}
	var _ jetstream.KeyValue = p.Ledger
}

func TestRememberKeepsTheNewest(t *testing.T) {
	var e ledger.Entry
	for i := range 40 {
		e.Remember(string(rune('A' + i)))
	}
	if len(e.RecentEvents) != 16 || !e.Seen(string(rune('A'+39))) || e.Seen("A") {
		t.Fatalf("RecentEvents = %v", e.RecentEvents)
	}
}
