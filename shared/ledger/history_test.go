package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
)

func TestReadAuditReturnsOneTenantsChangesInOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := natstest.Provision(t, natstest.Connect(t))
	l := &ledger.Ledger{KV: p.Ledger, JS: p.JS, AuditSubject: p.Topology.AuditSubject}
	stream := p.Topology.AuditStream()

	// Nothing stored yet: no records, no error, no consumer left waiting.
	n := 0
	if err := ledger.ReadAudit(ctx, p.JS, stream, p.Topology.AuditSubject("acme"), func(ledger.AuditRecord) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("empty trail: %d records, err %v", n, err)
	}

	for i := range 5 {
		for _, tn := range []string{"acme", "globex"} {
			key := ledger.Key(tn, fmt.Sprintf("sc-%d", i%2), "")
			if _, err := l.Update(ctx, key, func(e *ledger.Entry, _ bool) (bool, error) {
				e.Tenant, e.Reason = tn, fmt.Sprintf("change %d", i)
				return true, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []string
	err := ledger.ReadAudit(ctx, p.JS, stream, p.Topology.AuditSubject("acme"), func(r ledger.AuditRecord) error {
		if r.Entry.Tenant != "acme" {
			t.Errorf("record of tenant %s in acme's trail", r.Entry.Tenant)
		}
		got = append(got, r.Entry.Reason)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[change 0 change 1 change 2 change 3 change 4]" {
		t.Fatalf("acme's trail = %v", got)
	}

	stop := errors.New("stop")
	calls := 0
	err = ledger.ReadAudit(ctx, p.JS, stream, p.Topology.AuditSubject("acme"), func(ledger.AuditRecord) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("fn error: calls %d err %v; want the first error returned at once", calls, err)
	}
}
