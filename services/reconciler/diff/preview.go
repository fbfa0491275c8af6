package diff

import "github.com/optout-sync/optout-sync/shared/store/runs"

// String names a reason for a Salesforce write, as a preview lists it.
func (w Why) String() string {
	switch w {
	case SalesConnectOnly:
		return "sales-connect-only"
	case WrittenBack:
		return "written-back"
	case ClearedBeforeOptOut:
		return "cleared-before-opt-out"
	}
	return "unknown"
}

// Preview lists the plan's changes, Salesforce writes first, at most limit
// of them (runs.PreviewLimit when not positive): what a dry run shows
// before a run is allowed to make them. Confirmations are not changes (the
// ledger only records what Salesforce already holds): not listed.
func (p Plan) Preview(limit int) *runs.Preview {
	if limit <= 0 {
		limit = runs.PreviewLimit
	}
	out := &runs.Preview{Total: len(p.SFWrites), Changes: []runs.Change{}}
	for _, op := range p.LedgerOps {
		if op.Kind != Confirm {
			out.Total++
		}
	}
	for _, w := range p.SFWrites {
		if len(out.Changes) == limit {
			return out
		}
		out.Changes = append(out.Changes, runs.Change{Side: runs.ChangeSalesforce, SalesforceID: w.ID.String(), Key: w.Key, What: w.Why.String()})
	}
	for _, op := range p.LedgerOps {
		if op.Kind == Confirm {
			continue
		}
		if len(out.Changes) == limit {
			return out
		}
		out.Changes = append(out.Changes, runs.Change{Side: runs.ChangeSalesConnect, SalesforceID: op.ID.String(), Key: op.Key, What: op.Kind.String()})
	}
	return out
}
