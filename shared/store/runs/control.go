package runs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/platform/telemetry"
)

// ControlVerb is the verb of the reconciler's control subject:
// Topology.ControlSubject(ControlVerb, tenant) = optout.v1.control.reconcile.<tenant>.
const ControlVerb = "reconcile"

// ControlRequest asks for a run of one tenant now (JSON body of the request).
type ControlRequest struct {
	// DryRun computes and reports everything and changes nothing.
	DryRun bool `json:"dryRun"`
	// By names the requester for the report ("optoutctl:ops",
	// "admin-page:jdoe"); never an email.
	By string `json:"by,omitempty"`
	// Full asks for a full scan of both sides rather than the incremental
	// run a run is by default (after a lost Change Data Capture position or
	// an overflow, or when an admin wants one).
	Full bool `json:"full,omitempty"`
}

// Reply codes of a refused request.
const (
	CodeBusy         = "busy"          // a run of the tenant is in progress (ActiveRunID)
	CodeSyncDisabled = "sync_disabled" // real runs need sync enabled; a dry run is allowed
	CodeBadRequest   = "bad_request"   // malformed body or tenant id
	CodeUnavailable  = "unavailable"   // the replica cannot start runs now (shutting down, Redis down)
)

// ControlReply answers a ControlRequest (JSON). The run itself goes on after
// the reply; follow it with Store.Active / Store.Report(tenant, RunID).
type ControlReply struct {
	Tenant   string `json:"tenant"`
	Accepted bool   `json:"accepted"`
	// RunID is the started run, or the unfinished run that was resumed
	// instead of starting a new one (Resumed).
	RunID   string `json:"runId,omitempty"`
	Resumed bool   `json:"resumed,omitempty"`
	DryRun  bool   `json:"dryRun"`
	// Code and Error say why a request was refused; ActiveRunID names the
	// run in the way when Code is CodeBusy (when known).
	Code        string `json:"code,omitempty"`
	Error       string `json:"error,omitempty"`
	ActiveRunID string `json:"activeRunId,omitempty"`
	// Replica is the reconciler replica that answered.
	Replica string `json:"replica,omitempty"`
}

// Request asks the reconciler (any replica; they share a queue group) to
// run tenant now, and returns its reply. The caller's trace context travels
// in the request headers, so the run's trace links back to it.
func Request(ctx context.Context, nc *nats.Conn, topo natsx.Topology, tenant string, req ControlRequest) (ControlReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return ControlReply{}, err
	}
	msg := nats.NewMsg(topo.ControlSubject(ControlVerb, tenant))
	msg.Data = body
	msg.Header.Set("Content-Type", "application/json")
	telemetry.Inject(ctx, msg.Header)
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return ControlReply{}, fmt.Errorf("reconcile request for %s: %w", tenant, err)
	}
	var rep ControlReply
	if err := json.Unmarshal(resp.Data, &rep); err != nil {
		return ControlReply{}, fmt.Errorf("reconcile reply for %s: %w", tenant, err)
	}
	return rep, nil
}
