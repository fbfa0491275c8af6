package tenantstatus

import (
	"context"
	"slices"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
)

// DeadLetterGroup is a tenant's dead letters of one cause: how many, since
// when, what fixes it, and their sequences (to retry them together).
type DeadLetterGroup struct {
	Code   string    `json:"code"`
	Class  string    `json:"class,omitempty"`
	Count  int       `json:"count"`
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
	Reason string    `json:"reason"` // the newest one's
	Advice string    `json:"advice"`
	Seqs   []uint64  `json:"seqs"`
}

// GroupDeadLetters reads a tenant's dead letters and groups them by cause,
// the largest group first.
func GroupDeadLetters(ctx context.Context, dlq deadletter.DLQ, tenant string) ([]DeadLetterGroup, error) {
	by := map[string]*DeadLetterGroup{}
	err := dlq.List(ctx, tenant, func(dl deadletter.DeadLetter) error {
		g := by[dl.Code]
		if g == nil {
			g = &DeadLetterGroup{Code: dl.Code, Class: dl.Class, First: dl.Time, Advice: DeadLetterAdvice(dl.Code)}
			by[dl.Code] = g
		}
		g.Count++
		g.Last, g.Reason = dl.Time, dl.Reason
		g.Seqs = append(g.Seqs, dl.Seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetterGroup, 0, len(by))
	for _, g := range by {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b DeadLetterGroup) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return a.First.Compare(b.First)
	})
	return out, nil
}

// DeadLetterAdvice says what fixes a cause of dead letters, by its code (a
// Salesforce errorCode, or the event validation's code), before they are
// retried: a retry without the fix only dead-letters them again.
func DeadLetterAdvice(code string) string {
	switch code {
	case "INVALID_FIELD_FOR_INSERT_UPDATE", "INSUFFICIENT_ACCESS_OR_READONLY", "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY":
		return "Field-level security: give the integration user edit access to the opt-out field on Lead and Contact (Setup → Object Manager → the field → Set Field-Level Security), then retry."
	case "INVALID_FIELD":
		return "The opt-out field does not exist on the object: install it on Lead and Contact, or choose Email Opt Out in the settings above, then retry."
	case "FIELD_CUSTOM_VALIDATION_EXCEPTION", "FIELD_INTEGRITY_EXCEPTION", "REQUIRED_FIELD_MISSING":
		return "A validation rule or a required field in the org refused the write: exempt the integration user from the rule (or fix the record), then retry."
	case "CANNOT_UPDATE_CONVERTED_LEAD":
		return "The Lead was converted and its Contact could not be found: check the conversion in Salesforce; a new event for the person with the Contact's id applies it."
	case "ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY":
		return "The record was deleted in Salesforce: undelete it from the Recycle Bin and retry, or leave it (nothing to opt out)."
	case "MALFORMED_ID", "bad_salesforce_id":
		return "The event carried a wrong Salesforce id: ask the publisher to send it again with the right id."
	case "retry_horizon_exceeded":
		return "Salesforce kept failing for longer than the retry horizon: check the tenant's health and the org's API allowance, then retry."
	case "too_large":
		return "The event was larger than the stream allows and cannot be replayed: ask the publisher to send it again."
	case "invalid_encoding", "undecodable", "bad_subject", "missing_field", "bad_event_id", "bad_tenant", "tenant_mismatch", "type_mismatch", "bad_enum", "bad_timestamp":
		return "The event did not follow the schema: fix the publisher and have it send the event again; retrying the copy fails the same way."
	}
	return "See the reason; fix the cause in Salesforce or at the publisher, then retry."
}
