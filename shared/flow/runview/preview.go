package runview

import (
	"fmt"

	"github.com/optout-sync/optout-sync/shared/store/runs"
)

// PreviewHeading introduces a dry run's list of changes ("" without one).
func PreviewHeading(r runs.Report) string {
	p := r.Preview
	if p == nil {
		return ""
	}
	if p.Total == 0 {
		return "Changes a run would make: none"
	}
	if len(p.Changes) < p.Total {
		return fmt.Sprintf("Changes a run would make (the first %d of %d):", len(p.Changes), p.Total)
	}
	return fmt.Sprintf("Changes a run would make (%d):", p.Total)
}

// PreviewLines says each change of a dry run's preview, in the words of
// the report (one home: optoutctl and the admin page print these).
func PreviewLines(r runs.Report) []string {
	if r.Preview == nil {
		return nil
	}
	out := make([]string, 0, len(r.Preview.Changes))
	for _, c := range r.Preview.Changes {
		out = append(out, ChangeText(c, r.Field))
	}
	return out
}

// ChangeText is one planned change in words.
func ChangeText(c runs.Change, field string) string {
	id := c.SalesforceID
	var s string
	switch c.Side + "/" + c.What {
	case runs.ChangeSalesforce + "/sales-connect-only":
		s = fmt.Sprintf("Salesforce: set %s on %s (opted out in Sales Connect only)", field, id)
	case runs.ChangeSalesforce + "/written-back":
		s = fmt.Sprintf("Salesforce: set %s on %s again (cleared in Salesforce after the opt-out; the opt-out wins)", field, id)
	case runs.ChangeSalesforce + "/cleared-before-opt-out":
		s = fmt.Sprintf("Salesforce: set %s on %s (cleared in Salesforce before the opt-out)", field, id)
	case runs.ChangeSalesConnect + "/apply-opt-out":
		s = fmt.Sprintf("Sales Connect: opt %s out (opted out in Salesforce only)", id)
	case runs.ChangeSalesConnect + "/record-opt-out":
		s = fmt.Sprintf("Sales Connect: record the opt-out of %s (known to Salesforce only)", id)
	case runs.ChangeSalesConnect + "/apply-resubscribe":
		s = fmt.Sprintf("Sales Connect: resubscribe %s (cleared in Salesforce after the opt-out; the latest wins)", id)
	case runs.ChangeSalesConnect + "/follow-conversion":
		s = fmt.Sprintf("Sales Connect: follow the conversion of a Lead into %s", id)
	default:
		s = fmt.Sprintf("%s: %s %s", c.Side, c.What, id)
	}
	if c.Key != "" {
		s += "; ledger " + c.Key
	}
	return s
}
