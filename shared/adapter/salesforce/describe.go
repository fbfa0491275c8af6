package salesforce

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// FieldDescribe is the part of a describe field entry the client uses.
type FieldDescribe struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Updateable bool   `json:"updateable"`
	Label      string `json:"label"`
}

// SObjectDescribe is GET /sobjects/{type}/describe, reduced to its fields.
type SObjectDescribe struct {
	Name   string          `json:"name"`
	Fields []FieldDescribe `json:"fields"`
}

// Field finds a field by API name; names are case-insensitive in Salesforce.
func (d *SObjectDescribe) Field(name string) (FieldDescribe, bool) {
	for _, f := range d.Fields {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return FieldDescribe{}, false
}

// Describe returns the fields of an sObject type.
func (c *Client) Describe(ctx context.Context, sobjectType string) (*SObjectDescribe, error) {
	if !validName(sobjectType) {
		return nil, invalidArgument("describe", "sObject type %q is not an API name", sobjectType)
	}
	var d SObjectDescribe
	cl := &call{op: "describe " + sobjectType, method: "GET",
		route: "/sobjects/" + sobjectType + "/describe",
		path:  "/sobjects/" + url.PathEscape(sobjectType) + "/describe"}
	if err := c.doJSON(ctx, cl, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// OptOutTypes are the objects an opt-out field must be usable on.
var OptOutTypes = []string{"Contact", "Lead"}

// CheckOptOutField verifies that field exists, is writable and is a checkbox
// on both Contact and Lead. A failing check is a PermanentTenant *Error
// naming every problem, e.g.
// "field Marketo_Sales_Opt_Out__c: missing on Lead; not writable on Contact".
// A failing describe call is returned as is (it has its own class).
func (c *Client) CheckOptOutField(ctx context.Context, field string) error {
	if !validName(field) {
		return invalidArgument("check opt-out field", "field %q is not an API name", field)
	}
	descs := make([]*SObjectDescribe, len(OptOutTypes))
	for i, t := range OptOutTypes {
		d, err := c.Describe(ctx, t)
		if err != nil {
			return fmt.Errorf("check opt-out field %s: %w", field, err)
		}
		descs[i] = d
	}
	problems := fieldProblems(field, OptOutTypes, descs)
	if len(problems) == 0 {
		return nil
	}
	e := newError("check opt-out field", 0, CodeFieldUnusable, "field "+field+": "+strings.Join(problems, "; "))
	e.Fields = []string{field}
	return e
}

// fieldProblems lists what keeps field from taking opt-out writes on each
// type: missing, then read-only, then not a checkbox.
func fieldProblems(field string, types []string, descs []*SObjectDescribe) []string {
	var missing, readOnly, wrongType []string
	for i, t := range types {
		f, ok := descs[i].Field(field)
		switch {
		case !ok:
			missing = append(missing, t)
		case !f.Updateable:
			readOnly = append(readOnly, t)
		}
		if ok && f.Type != "" && f.Type != "boolean" {
			wrongType = append(wrongType, fmt.Sprintf("%s (type %s)", t, f.Type))
		}
	}
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, "missing on "+strings.Join(missing, " and "))
	}
	if len(readOnly) > 0 {
		problems = append(problems, "not writable on "+strings.Join(readOnly, " and "))
	}
	if len(wrongType) > 0 {
		problems = append(problems, "not a checkbox on "+strings.Join(wrongType, " and "))
	}
	return problems
}

// validName accepts Salesforce API names (Contact, Foo__c, ns__Bar__c,
// Account.Name), the only things interpolated into paths and SOQL.
func validName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func invalidArgument(op, format string, args ...any) *Error {
	return newError(op, 0, CodeInvalidArgument, fmt.Sprintf(format, args...))
}
