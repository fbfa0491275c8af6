package service_test

import (
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/reconciler/internal/recontest"
	"github.com/optout-sync/optout-sync/services/reconciler/service"
)

var noSpan trace.SpanContext

// harness is recontest's, with replicas that are whole services (lease
// loop, schedule, control requests) around an engine.
type harness struct{ *recontest.Harness }

func newHarness(t *testing.T, orgNames ...string) *harness {
	t.Helper()
	return &harness{recontest.New(t, orgNames...)}
}

// replica builds a reconciler replica with its own Redis connection, lease
// locker and Salesforce clients (whose calls the sandbox logs under the
// replica's name).
func (h *harness) replica(o recontest.ReplicaOpts) *service.Service {
	return h.replicaMax(o, 0)
}

// replicaMax is replica with at most maxConcurrent scheduled runs at once
// (0: the default).
func (h *harness) replicaMax(o recontest.ReplicaOpts, maxConcurrent int) *service.Service {
	h.T.Helper()
	ro := o.Options()
	ro.MaxConcurrent = maxConcurrent
	return h.Service(ro)
}
