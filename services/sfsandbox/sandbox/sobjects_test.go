package sandbox

import (
	"strings"
	"testing"
	"time"
)

func TestDescribe(t *testing.T) {
	e := newEnv(t)
	fields := func(org, typ string) map[string]bool {
		r := e.api(e.token(org), "GET", org, "/sobjects/"+typ+"/describe", nil)
		if r.status != 200 {
			t.Fatalf("describe %s: %d", org, r.status)
		}
		var d struct {
			Fields []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Updateable bool   `json:"updateable"`
			} `json:"fields"`
		}
		r.json(t, &d)
		out := map[string]bool{}
		for _, f := range d.Fields {
			out[f.Name] = f.Updateable
			if f.Name == "HasOptedOutOfEmail" && f.Type != "boolean" {
				t.Errorf("HasOptedOutOfEmail type %s", f.Type)
			}
		}
		return out
	}
	acme := fields("acme", "contact")
	if w, ok := acme[DefaultCustomField]; !ok || !w || !acme["HasOptedOutOfEmail"] || acme["SystemModstamp"] {
		t.Errorf("acme describe %v", acme)
	}
	if _, ok := fields("globex", "Lead")[DefaultCustomField]; ok {
		t.Error("globex has no custom field")
	}
	e.org("globex").SetCustomField(true, false)
	if w, ok := fields("globex", "Lead")[DefaultCustomField]; !ok || w {
		t.Error("installed read-only custom field")
	}
	if r := e.api(e.token("acme"), "GET", "acme", "/sobjects/Account/describe", nil); r.status != 404 {
		t.Errorf("unknown object: %d", r.status)
	}
}

func TestSObjectPatch(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	old := e.clock.Now().Add(-time.Hour)
	c := o.Put(Record{Type: "Contact", Email: "a@x.test", SystemModstamp: old, LastModifiedDate: old})
	gone := o.Put(Record{Type: "Contact"})
	_ = o.Delete(gone.ID)
	lead := o.Put(Record{Type: "Lead"})
	conv := o.Put(Record{Type: "Lead"})
	if _, err := o.ConvertLead(conv.ID); err != nil {
		t.Fatal(err)
	}
	globexLead := e.org("globex").Put(Record{Type: "Lead"})
	missing := makeID(prefixContact, 999999).String()
	tok := e.token("acme")
	cases := []struct {
		name, org, path string
		body            any
		status          int
		code, msg       string
	}{
		{"ok 18", "acme", "/sobjects/Contact/" + c.ID, map[string]any{"HasOptedOutOfEmail": true}, 204, "", ""},
		{"ok 15 lowercase type", "acme", "/sobjects/contact/" + c.ID[:15], map[string]any{"hasoptedoutofemail": true, DefaultCustomField: true}, 204, "", ""},
		{"invalid id", "acme", "/sobjects/Contact/abc", map[string]any{"HasOptedOutOfEmail": true}, 404, "NOT_FOUND", "Provided external ID field does not exist or is not accessible: abc"},
		{"missing", "acme", "/sobjects/Contact/" + missing, map[string]any{"HasOptedOutOfEmail": true}, 404, "NOT_FOUND", msgNotFound},
		{"deleted", "acme", "/sobjects/Contact/" + gone.ID, map[string]any{"HasOptedOutOfEmail": true}, 404, "ENTITY_IS_DELETED", "entity is deleted"},
		{"wrong type", "acme", "/sobjects/Contact/" + lead.ID, map[string]any{"HasOptedOutOfEmail": true}, 400, "MALFORMED_ID", "Contact ID: id value of incorrect type: " + lead.ID},
		{"unknown field", "acme", "/sobjects/Contact/" + c.ID, map[string]any{"Foo__c": true}, 400, "INVALID_FIELD", "No such column 'Foo__c' on sobject of type Contact"},
		{"read-only field", "acme", "/sobjects/Contact/" + c.ID, map[string]any{"SystemModstamp": "2020-01-01T00:00:00Z"}, 400, "INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: SystemModstamp" + fieldSecurityTail},
		{"not installed", "globex", "/sobjects/Lead/" + globexLead.ID, map[string]any{DefaultCustomField: true}, 400, "INVALID_FIELD", "No such column '" + DefaultCustomField + "' on sobject of type Lead"},
		{"converted", "acme", "/sobjects/Lead/" + conv.ID, map[string]any{"HasOptedOutOfEmail": true}, 400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead"},
		{"bad json", "acme", "/sobjects/Contact/" + c.ID, "nope", 400, "JSON_PARSER_ERROR", ""},
		{"bad value", "acme", "/sobjects/Contact/" + c.ID, map[string]any{"HasOptedOutOfEmail": "yes"}, 400, "JSON_PARSER_ERROR", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk := tok
			if tc.org != "acme" {
				tk = e.token(tc.org)
			}
			r := e.api(tk, "PATCH", tc.org, tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 204 {
				if len(r.body) != 0 {
					t.Errorf("204 with body %q", r.body)
				}
				return
			}
			var errs []apiErrorWithFields
			r.json(t, &errs)
			if errs[0].ErrorCode != tc.code || (tc.msg != "" && errs[0].Message != tc.msg) {
				t.Errorf("got %+v", errs[0])
			}
		})
	}
	got, _ := o.Get(c.ID)
	if !got.HasOptedOutOfEmail || !got.CustomOptOut || !got.SystemModstamp.After(old) || !got.LastModifiedDate.After(old) {
		t.Errorf("write not applied: %+v", got)
	}
	o.SetCustomField(true, false)
	r := e.api(tok, "PATCH", "acme", "/sobjects/Contact/"+c.ID, map[string]any{DefaultCustomField: true})
	golden(t, "invalid_field_for_insert_update", r)

	// Sforce-Auto-Assign is recorded, and assignment rules run unless FALSE.
	e.api(tok, "PATCH", "acme", "/sobjects/Lead/"+lead.ID, map[string]any{"HasOptedOutOfEmail": true})
	e.api(tok, "PATCH", "acme", "/sobjects/Lead/"+lead.ID, map[string]any{"HasOptedOutOfEmail": true}, "Sforce-Auto-Assign", "FALSE", "Sforce-Call-Options", "client=optout-sync")
	calls := o.Calls()
	a, b := calls[len(calls)-2], calls[len(calls)-1]
	if !a.AssignmentRules || a.AutoAssign != "" || b.AssignmentRules || b.AutoAssign != "FALSE" || b.Client != "optout-sync" {
		t.Errorf("auto-assign log: %+v / %+v", a, b)
	}
	ch := o.Changes()
	if last := ch[len(ch)-1]; last.Origin != "com/salesforce/api/rest/62.0;client=optout-sync" {
		t.Errorf("change origin %q", last.Origin)
	}
}

func TestSObjectGet(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact", Email: "a@x.test", HasOptedOutOfEmail: true})
	tok := e.token("acme")
	r := e.api(tok, "GET", "acme", "/sobjects/Contact/"+c.ID[:15]+"?fields=Id,HasOptedOutOfEmail", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"Id":"`+c.ID+`","HasOptedOutOfEmail":true`) {
		t.Errorf("get: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "GET", "acme", "/sobjects/Contact/"+c.ID+"?fields=Nope", nil); r.status != 400 || errCode(t, r) != "INVALID_FIELD" {
		t.Errorf("bad field: %d %s", r.status, r.body)
	}
	_ = o.Delete(c.ID)
	r = e.api(tok, "GET", "acme", "/sobjects/Contact/"+c.ID, nil)
	if r.status != 404 || string(r.body) != `[{"message":"entity is deleted","errorCode":"ENTITY_IS_DELETED","fields":[]}]`+"\n" {
		t.Errorf("deleted: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "PUT", "acme", "/sobjects/Contact/"+c.ID, nil); r.status != 405 {
		t.Errorf("method: %d", r.status)
	}
}
