// Package runs is the record of the nightly reconciler's work: run reports,
// the progress (checkpoint) of a running run, schedule-slot claims, the
// newest fencing token per tenant, and the control request/reply that starts
// a run. The reconciler writes it; optoutctl and the admin page read it.
//
// Everything lives in the runs KV bucket (natsx.Topology.RunsBucket), under
// these keys (tenant ids are one NATS token, see event.ValidTenant):
//
//	run.<tenant>.<runID>  Report: written when a run starts (status running)
//	                      and when it ends; run ids sort by start time
//	active.<tenant>       Checkpoint: the unfinished run of the tenant with
//	                      its progress; present only while a run is
//	                      unfinished (running, or interrupted and waiting to
//	                      be resumed by any replica)
//	fence.<tenant>        FenceRecord: the newest fencing token; writes
//	                      carrying an older one are refused
//	slot.<tenant>         SlotClaim: the newest schedule slot a run was
//	                      started for (exactly one run per slot)
//	last.<tenant>         LastSuccess: the last run that succeeded
//	mark.<tenant>         Watermark: where the last complete run read both
//	                      sides up to; the next incremental run reads what
//	                      changed after it (written only when a run completes)
//	cdc.<tenant>          CDC: the tenant's Change Data Capture stream (its
//	                      replay id, state and reason, delivered events),
//	                      written under the CDC lease's own fence
//
// Every finished run is also published as a JSON Report on
// optout.v1.runs.<tenant> (stream OPTOUT_RUNS), Nats-Msg-Id "<runID>".
//
// Runs are started over NATS request/reply on optout.v1.control.reconcile.<tenant>
// (natsx.Topology.ControlSubject(ControlVerb, tenant)) with a JSON
// ControlRequest; the reply is a JSON ControlReply. See Request.
package runs

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Status is where a run stands.
type Status string

// Statuses. Every status but StatusRunning is final.
const (
	// StatusRunning: the run is in progress, or was interrupted (crash,
	// lost lease, shutdown, transient failure) and will be resumed.
	StatusRunning Status = "running"
	// StatusSucceeded: both sides agree (a dry run: everything was computed).
	StatusSucceeded Status = "succeeded"
	// StatusStoppedGuard: the mass-resubscribe guard stopped the run before
	// any write; Reason says why. An admin must look.
	StatusStoppedGuard Status = "stopped_guard"
	// StatusStoppedBudget: the run's share of the org's API allowance (or
	// the allowance itself) ran out; the next run continues the work.
	StatusStoppedBudget Status = "stopped_budget"
	// StatusFailed: the run cannot succeed without an admin (credentials,
	// missing field) or gave up after repeated transient failures.
	StatusFailed Status = "failed"
	// StatusIncomplete: the run finished its diff, but events still waited
	// unfolded in the events stream when it ended (Reason says how many and
	// since when); the next run, or the pusher, folds them.
	StatusIncomplete Status = "incomplete"
	// StatusAbandoned: an interrupted dry run, dropped by the next holder
	// (a dry run is cheap to repeat and must not block real runs).
	StatusAbandoned Status = "abandoned"
)

// Final reports whether the status is an end state.
func (s Status) Final() bool { return s != StatusRunning && s != "" }

// TriggerKind says why a run started.
type TriggerKind string

// Trigger kinds.
const (
	// TriggerSchedule: the tenant's daily slot (ScheduleTime in ScheduleZone).
	TriggerSchedule TriggerKind = "schedule"
	// TriggerCatchUp: a slot that passed while no replica ran it, started
	// late (at the next replica's start or tick).
	TriggerCatchUp TriggerKind = "catch-up"
	// TriggerManual: a control request (optoutctl, the admin page).
	TriggerManual TriggerKind = "manual"
	// TriggerCDC: changes a Change Data Capture stream delivered, applied
	// between runs (engine.Apply); never a run of its own.
	TriggerCDC TriggerKind = "cdc"
)

// Trigger is who or what started a run.
type Trigger struct {
	Kind TriggerKind `json:"kind"`
	// By names the requester of a manual run (e.g. "optoutctl:ops"); never
	// an email.
	By string `json:"by,omitempty"`
	// Slot is the scheduled instant of a schedule or catch-up run.
	Slot time.Time `json:"slot,omitzero"`
}

// Phase is the step a running run is in.
type Phase string

// Phases, in order.
const (
	PhaseStarting            Phase = "starting"
	PhaseReadingSalesforce   Phase = "reading_salesforce"
	PhaseReadingLedger       Phase = "reading_ledger"
	PhaseLookingUp           Phase = "looking_up"
	PhaseWritingSalesConnect Phase = "writing_sales_connect"
	PhaseWritingSalesforce   Phase = "writing_salesforce"
	PhaseDone                Phase = "done"
)

// Counts classify every person the run saw. A person is counted once, in
// the first class that applies, except the totals at the top.
type Counts struct {
	// Totals.
	SalesforceOptOuts int64 `json:"salesforceOptOuts"` // Contacts and Leads with the field true
	LedgerEntries     int64 `json:"ledgerEntries"`     // persons the ledger holds
	LedgerOptOuts     int64 `json:"ledgerOptOuts"`     // of which opted out

	// InBoth: opted out on both sides; nothing to write.
	InBoth int64 `json:"inBoth"`
	// Unconfirmed: in both, but the ledger did not yet record Salesforce's
	// confirmation on this field; the ledger is updated (no API call).
	Unconfirmed int64 `json:"unconfirmed"`
	// SalesConnectOnly: opted out in Sales Connect only; written to Salesforce.
	SalesConnectOnly int64 `json:"salesConnectOnly"`
	// SalesforceOnly: opted out in Salesforce only, for a person the ledger
	// knows (not opted out there, and the Salesforce change is newer than
	// the ledger's decision); applied to Sales Connect (ledger + event).
	SalesforceOnly int64 `json:"salesforceOnly"`
	// KnownToSalesforceOnly: a Salesforce opt-out of a person the ledger
	// has never seen; recorded as an sf.<id> ledger entry (so a later link
	// honours it) and announced to Sales Connect.
	KnownToSalesforceOnly int64 `json:"knownToSalesforceOnly"`
	// ParkedNoID: ledger opt-outs without a Salesforce id; nothing to compare.
	ParkedNoID int64 `json:"parkedNoId"`
	// MalformedIDs: ledger entries whose Salesforce id is not a valid id.
	MalformedIDs int64 `json:"malformedIds"`

	// Conflicts.
	// ResubscribedInSalesforce: the field we confirmed true is now false
	// and its SystemModstamp is newer than the opt-out: a Salesforce-side
	// resubscribe. Applied to Sales Connect under latest-wins
	// (ResubscribesApplied), written back under optout-wins
	// (ResubscribesWrittenBack).
	ResubscribedInSalesforce int64 `json:"resubscribedInSalesforce"`
	ResubscribesApplied      int64 `json:"resubscribesApplied"`
	ResubscribesWrittenBack  int64 `json:"resubscribesWrittenBack"`
	// ClearedBeforeOptOut: confirmed true, now false, but Salesforce's
	// last change is not newer than the opt-out; the opt-out is written back.
	ClearedBeforeOptOut int64 `json:"clearedBeforeOptOut"`
	// ResubscribedInSalesConnect: opted out in Salesforce, but Sales Connect
	// holds an explicit resubscribe newer than Salesforce's last change;
	// left as it is (the shared field is never cleared from here).
	ResubscribedInSalesConnect int64 `json:"resubscribedInSalesConnect"`
	// MissingInSalesforce: confirmed true, and the record can no longer be
	// read (deleted, merged, no access). Never reverted by absence.
	MissingInSalesforce int64 `json:"missingInSalesforce"`

	// LeadsConverted: persons the ledger knew by a Lead that Salesforce
	// converted into a Contact of the true-set; followed to the Contact (as
	// the push follows them) and compared there, never taken for a new
	// person known to Salesforce only.
	LeadsConverted int64 `json:"leadsConverted"`
}

// Writes are the changes a run made, or, for a dry run, planned.
type Writes struct {
	// Planned changes, from the diff (what a dry run would have done).
	PlannedSalesforce   int64 `json:"plannedSalesforce"`   // records to set true
	PlannedSalesConnect int64 `json:"plannedSalesConnect"` // ledger entries to write
	// PlannedConfirmations: of PlannedSalesConnect, the entries that only
	// record Salesforce's confirmation of an opt-out both sides hold (no
	// change, no event); the rest are changes, each announced by an event.
	PlannedConfirmations int64 `json:"plannedConfirmations"`
	// Made, by every attempt of the run: an attempt interrupted in the
	// middle of a batch has its batch counted by the attempt that resumes
	// it (Checkpoint.InFlight), so written + failed + remaining = planned.
	SalesforceWritten int64 `json:"salesforceWritten"`
	SalesforceFailed  int64 `json:"salesforceFailed"`
	// LedgerWritten counts every ledger entry the run wrote, of which
	// LedgerConfirmations only recorded Salesforce's confirmation (of an
	// opt-out in both, or of the run's own Salesforce write).
	LedgerWritten       int64 `json:"ledgerWritten"`
	LedgerConfirmations int64 `json:"ledgerConfirmations"`
	LedgerFailed        int64 `json:"ledgerFailed"`
	// EventsPublished: the changes announced to Sales Connect on
	// optout.v1.applied (one per change written, whichever attempt
	// published it).
	EventsPublished int64 `json:"eventsPublished"`
	// LeadsFollowed: ledger entries moved from a converted Lead to its
	// Contact (by the diff's finding, or by a write Salesforce refused).
	LeadsFollowed int64 `json:"leadsFollowed"`
	// EventsFolded: Sales Connect events the pusher had not folded yet (it
	// was down or behind) that the run folded into the ledger first.
	EventsFolded int64 `json:"eventsFolded,omitempty"`
	// EventsWaiting: events a dry run found waiting unfolded (it then ends
	// incomplete); a run that writes folds them all first.
	EventsWaiting int64 `json:"eventsWaiting,omitempty"`
	// Remaining: planned changes this run did not get to (budget, guard,
	// dry run); the next run recomputes and makes them. Meaningless when
	// the report is NotCompared (nothing was planned): never read it as 0.
	Remaining int64 `json:"remaining"`
}

// API is the run's use of the org's daily API allowance.
type API struct {
	// RemainingAtStart is the org's remaining daily allowance when the run
	// (first attempt) started; Budget is the run's share of it.
	RemainingAtStart int64 `json:"remainingAtStart"`
	Budget           int64 `json:"budget"`
	// Spent counts every request the run sent (retries and failures too).
	Spent int64 `json:"spent"`
	// Of which: reading the opted-out sets (pages, Bulk job calls),
	// looking up absent records, writing, and the rest (limits, describe).
	Reads   int64 `json:"reads"`
	Lookups int64 `json:"lookups"`
	Writes  int64 `json:"writes"`
	// Pages is the number of SOQL pages or Bulk result pages read.
	Pages int64 `json:"pages"`
	// ReadPath per object: "soql" or "bulk".
	ReadPath map[string]string `json:"readPath,omitempty"`
}

// Preview is what a dry run would change, record by record: the first
// PreviewLimit changes of its plan (Total is all of them), so an admin sees
// them before a run is allowed to make them.
type Preview struct {
	Total   int      `json:"total"`
	Changes []Change `json:"changes"`
}

// PreviewLimit bounds a dry run's listed changes (the report stays small).
const PreviewLimit = 200

// Change is one planned change.
type Change struct {
	// Side is where it is made: ChangeSalesforce or ChangeSalesConnect.
	Side         string `json:"side"`
	SalesforceID string `json:"salesforceId,omitempty"`
	Key          string `json:"key,omitempty"` // the ledger entry
	// What: for Salesforce, why the field is set (sales-connect-only,
	// written-back, cleared-before-opt-out); for Sales Connect, the change
	// (apply-opt-out, record-opt-out, apply-resubscribe, confirm, follow-conversion).
	What string `json:"what"`
}

// Sides of a Change.
const (
	ChangeSalesforce   = "salesforce"
	ChangeSalesConnect = "sales_connect"
)

// Guard is the mass-resubscribe guard's verdict.
type Guard struct {
	Resubscribes int64   `json:"resubscribes"` // the run would apply this many
	Limit        int64   `json:"limit"`        // more than this stops the run
	OptOuts      int64   `json:"optOuts"`      // the ledger's opt-outs
	Share        float64 `json:"share"`
	Min          int64   `json:"min"`
	Tripped      bool    `json:"tripped"`
}

// Report is one run.
type Report struct {
	RunID   string  `json:"runId"`
	Tenant  string  `json:"tenant"`
	Status  Status  `json:"status"`
	Phase   Phase   `json:"phase"`
	Reason  string  `json:"reason,omitempty"` // why it stopped or failed, for admins
	DryRun  bool    `json:"dryRun"`
	Trigger Trigger `json:"trigger"`
	// Field is the Salesforce field compared; Policy the conflict policy.
	Field  string `json:"field"`
	Policy string `json:"policy"`

	StartedAt       time.Time `json:"startedAt"`
	FinishedAt      time.Time `json:"finishedAt,omitzero"`
	DurationSeconds float64   `json:"durationSeconds"`

	// NotCompared: the run ended (budget, failure) before it had compared
	// both sides, so Counts are partial and nothing is known of what
	// remains: not "0 changes remain".
	NotCompared bool   `json:"notCompared,omitempty"`
	Counts      Counts `json:"counts"`
	Writes      Writes `json:"writes"`
	API         API    `json:"api"`
	Guard       *Guard `json:"guard,omitempty"`
	// Preview lists a dry run's planned changes (nil for a real run).
	Preview *Preview `json:"preview,omitempty"`
	// Scan says whether the run compared everything (full) or only what
	// changed since the last complete run (incremental), and why; nil in
	// reports from before incremental runs.
	Scan *Scan `json:"scan,omitempty"`

	// Attempts is 1, plus one per resumption after an interruption.
	Attempts int `json:"attempts"`
	// Fence is the fencing token of the attempt that wrote this report;
	// Holder the replica that ran it; TraceID its trace (one per attempt).
	Fence   uint64 `json:"fence"`
	Holder  string `json:"holder"`
	TraceID string `json:"traceId,omitempty"`
}

// ScanKind is how much of both sides a run compares.
type ScanKind string

// Scan kinds.
const (
	// ScanFull reads every opted-out record and every ledger entry.
	ScanFull ScanKind = "full"
	// ScanIncremental reads only the records whose SystemModstamp is after
	// the last complete run's watermark (less an overlap) and the ledger
	// entries changed after it, and compares those persons.
	ScanIncremental ScanKind = "incremental"
)

// Scan is the kind of a run and what it read.
type Scan struct {
	Kind ScanKind `json:"kind"`
	// Why the kind was chosen, for admins ("no complete run yet", "weekly
	// full scan", "requested by optoutctl:ops", ...).
	Why string `json:"why"`
	// Since (incremental): records with a SystemModstamp after this
	// instant, on Salesforce's clock, were read; LedgerAfter: ledger
	// changes after this position of the ledger's stream.
	Since       time.Time `json:"since,omitzero"`
	LedgerAfter uint64    `json:"ledgerAfter,omitempty"`
	// SalesforceRead: records read from Salesforce (incremental: changed
	// ones, either value; full: the opted-out ones). LedgerRead: ledger
	// entries read (incremental: changed ones).
	SalesforceRead int64 `json:"salesforceRead"`
	LedgerRead     int64 `json:"ledgerRead"`
}

// Watermark is where the last complete run (succeeded, not a dry run, no
// failed write) read both sides up to: the next incremental run reads what
// changed after it. Each side is marked on its own clock, never ours:
// Salesforce's time (its response's Date, taken before the read began)
// and the ledger stream's sequence (taken before the ledger read began),
// so nothing changed during a run is skipped by the next.
type Watermark struct {
	RunID string `json:"runId"`
	// Field is the field compared: a run on another field is full.
	Field      string    `json:"field"`
	Salesforce time.Time `json:"salesforce"`
	LedgerSeq  uint64    `json:"ledgerSeq"`
	// FullAt is when the last full scan completed (our clock: it only
	// paces the cadence of full scans); LedgerOptOuts is the ledger's
	// opt-outs it counted, the mass-resubscribe guard's base in
	// incremental runs (which do not count them all).
	FullAt        time.Time `json:"fullAt"`
	LedgerOptOuts int64     `json:"ledgerOptOuts"`
	At            time.Time `json:"at"`
}

// Checkpoint is the progress of an unfinished run, readable while it runs
// and the state another replica resumes from.
type Checkpoint struct {
	Report Report `json:"report"`
	// DiffComplete: the classification finished once; Report.Counts are the
	// run's counts and a resumed attempt keeps them (its own diff sees the
	// writes already made as "in both").
	DiffComplete bool `json:"diffComplete"`
	// RetryAt: after a transient failure, not resumed before this instant.
	RetryAt time.Time `json:"retryAt,omitzero"`
	// Failures counts consecutive transient failures.
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
	// InFlight is the batch being written when this checkpoint was saved:
	// an attempt that stops in its middle has not counted it; the attempt
	// that resumes counts what of it was written.
	InFlight *InFlight `json:"inFlight,omitempty"`
}

// InFlight is a batch of writes started and not yet counted.
type InFlight struct {
	// Side is "salesforce" or "sales_connect".
	Side string `json:"side"`
	// Ops are the batch's ledger writes (Sales Connect side) or the
	// records written (Salesforce side).
	Ops []InFlightOp `json:"ops"`
}

// The sides of an InFlight batch.
const (
	SideSalesforce   = "salesforce"
	SideSalesConnect = "sales_connect"
)

// InFlightOp is one write of an in-flight batch.
type InFlightOp struct {
	Key string `json:"key,omitempty"` // the ledger entry
	// SalesforceID is the record (Salesforce side).
	SalesforceID string `json:"salesforceId,omitempty"`
	// EventID is the applied event a Sales Connect change announces; empty
	// for a confirmation.
	EventID string `json:"eventId,omitempty"`
}

// FenceRecord is the newest fencing token of a tenant.
type FenceRecord struct {
	Fence  uint64    `json:"fence"`
	RunID  string    `json:"runId,omitempty"`
	Holder string    `json:"holder,omitempty"`
	At     time.Time `json:"at"`
}

// SlotClaim is the newest schedule slot a run was started for.
type SlotClaim struct {
	Slot      time.Time `json:"slot"`
	RunID     string    `json:"runId"`
	Holder    string    `json:"holder"`
	ClaimedAt time.Time `json:"claimedAt"`
}

// LastSuccess is the last run of a tenant that succeeded (dry runs excluded).
type LastSuccess struct {
	RunID      string    `json:"runId"`
	Trigger    Trigger   `json:"trigger"`
	FinishedAt time.Time `json:"finishedAt"`
}

// NewRunID returns an id that sorts by start time to the millisecond, e.g.
// "20261128T200000123Z-3fa9c1" (no '.', which would split a KV key).
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	now = now.UTC()
	return now.Format("20060102T150405") + fmt.Sprintf("%03dZ-", now.Nanosecond()/1e6) + hex.EncodeToString(b[:])
}
