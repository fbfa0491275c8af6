package sandbox

import (
	"strings"
	"testing"
	"time"
)

func TestSOQLParser(t *testing.T) {
	schemas := func(t objType) *schema { return buildSchema(t, DefaultCustomField, true, true) }
	valid := []string{
		"SELECT Id FROM Contact",
		"select id, hasoptedoutofemail from contact",
		"SELECT Id, HasOptedOutOfEmail, SystemModstamp FROM Contact WHERE SystemModstamp > 2025-01-01T00:00:00Z",
		"SELECT Id FROM Contact WHERE SystemModstamp >= 2025-01-01T00:00:00+05:00 AND SystemModstamp < 2025-01-01T00:00:00.000-08:00",
		"SELECT Id FROM Lead WHERE Id IN ('00QRO0000000001', '00QRO0000000002') ORDER BY Id LIMIT 10",
		"SELECT Id FROM Contact WHERE HasOptedOutOfEmail = true OR (Email != null AND NOT Email LIKE '%@x.test')",
		"SELECT Id FROM Contact WHERE Email NOT IN ('a@b.c', null) ORDER BY SystemModstamp DESC NULLS LAST, Id ASC",
		"SELECT Id FROM Contact WHERE " + DefaultCustomField + " = false AND IsDeleted = false",
		"SELECT Id FROM Lead WHERE ConvertedContactId = null AND IsConverted <> true",
		"SELECT Id FROM Contact WHERE Email = 'it\\'s@x.test'",
	}
	for _, q := range valid {
		if _, err := compileSOQL(q, schemas); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	invalid := []struct{ q, code, msg string }{
		{"SELECT Id FRM Contact", "MALFORMED_QUERY", "unexpected token: FRM"},
		{"SELECT FROM Contact", "MALFORMED_QUERY", "unexpected token: FROM"},
		{"SELECT Id FROM", "MALFORMED_QUERY", "unexpected token: <EOF>"},
		{"SELECT Id FROM Contact WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"},
		{"SELECT Id FROM Contact WHERE (Id = '003RO0000035WQg'", "MALFORMED_QUERY", "unexpected token: <EOF>"},
		{"SELECT Id FROM Contact LIMIT x", "MALFORMED_QUERY", "unexpected token: x"},
		{"SELECT Id FROM Contact WHERE Email = 'open", "MALFORMED_QUERY", "mismatched character"},
		{"SELECT Id, Id FROM Contact", "MALFORMED_QUERY", "duplicate field selected: Id"},
		{"SELECT COUNT() FROM Contact", "MALFORMED_QUERY", "unsupported function"},
		{"SELECT Id FROM Contact WHERE HasOptedOutOfEmail = 'true'", "MALFORMED_QUERY", "must be of type boolean"},
		{"SELECT Id FROM Contact WHERE SystemModstamp > 2025-01-01", "MALFORMED_QUERY", "must be of type dateTime"},
		{"SELECT Id FROM Contact WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: nope"},
		{"SELECT Id, Foo__c FROM Contact", "INVALID_FIELD", "No such column 'Foo__c' on entity 'Contact'. If you are attempting to use a custom field"},
		{"SELECT Id FROM Contact ORDER BY Nope", "INVALID_FIELD", "No such column 'Nope'"},
		{"SELECT Id FROM Account", "INVALID_TYPE", "sObject type 'Account' is not supported"},
		{"SELECT IsConverted FROM Contact", "INVALID_FIELD", "No such column 'IsConverted' on entity 'Contact'"},
	}
	for _, c := range invalid {
		_, err := compileSOQL(c.q, schemas)
		if err == nil {
			t.Errorf("%s: accepted", c.q)
			continue
		}
		if err.code != c.code || !strings.Contains(err.msg, c.msg) {
			t.Errorf("%s: got %s %q", c.q, err.code, err.msg)
		}
	}
	_, err := compileSOQL("SELECT Id FRM Contact", schemas)
	if got := err.render("SELECT Id FRM Contact"); got != "\nSELECT Id FRM Contact\n          ^\nERROR at Row:1:Column:11\nunexpected token: FRM" {
		t.Errorf("render %q", got)
	}
	// The custom field disappears with its installation.
	noCustom := func(t objType) *schema { return buildSchema(t, DefaultCustomField, false, false) }
	if _, err := compileSOQL("SELECT "+DefaultCustomField+" FROM Contact", noCustom); err == nil || err.code != "INVALID_FIELD" {
		t.Errorf("uninstalled custom field: %v", err)
	}
}

func TestSOQLEvaluation(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	var ids []string
	for i := 0; i < 6; i++ {
		e.clock.Advance(time.Second)
		r := o.Put(Record{Type: "Contact", Email: []string{"A@x.test", "b@x.test", "", "c@y.test", "d@x.test", "e@y.test"}[i], HasOptedOutOfEmail: i%2 == 0})
		ids = append(ids, r.ID)
	}
	_ = o.Delete(ids[5])
	run := func(q string, all bool) []string {
		cq, err := compileSOQL(q, o.schemaFor)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var out []string
		for _, rf := range o.st.execute(cq, all) {
			out = append(out, o.st.recs[rf.typ()][rf.idx()].id.String())
		}
		return out
	}
	eq := func(name string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %v want %v", name, got, want)
		}
	}
	eq("opted out", run("SELECT Id FROM Contact WHERE HasOptedOutOfEmail = true", false), ids[0], ids[2], ids[4])
	eq("queryAll", run("SELECT Id FROM Contact WHERE IsDeleted = true", true), ids[5])
	eq("case-insensitive email", run("SELECT Id FROM Contact WHERE Email = 'a@X.test'", false), ids[0])
	eq("like", run("SELECT Id FROM Contact WHERE Email LIKE '%@y.test'", false), ids[3])
	eq("null", run("SELECT Id FROM Contact WHERE Email = null", false), ids[2])
	eq("in 15", run("SELECT Id FROM Contact WHERE Id IN ('"+ids[3][:15]+"','"+ids[1]+"')", false), ids[1], ids[3])
	eq("or/and/not", run("SELECT Id FROM Contact WHERE (HasOptedOutOfEmail = false AND NOT Email LIKE 'b%') OR Id = '"+ids[0]+"'", false), ids[0], ids[3])
	eq("order desc limit", run("SELECT Id FROM Contact ORDER BY SystemModstamp DESC LIMIT 2", false), ids[4], ids[3])
	eq("datetime", run("SELECT Id FROM Contact WHERE SystemModstamp > 2025-03-01T10:00:03Z", false), ids[3], ids[4])
	eq("datetime offset", run("SELECT Id FROM Contact WHERE SystemModstamp > 2025-03-01T12:00:03+02:00", false), ids[3], ids[4])
	eq("order nulls first", run("SELECT Id FROM Contact ORDER BY Email LIMIT 2", false), ids[2], ids[0])
}

// Finding a person's duplicates (spec §5): WHERE Email IN (…) on Contact
// and Lead, compared without regard to case as Salesforce compares text, a
// quote escaped inside a literal, and converted Leads left out by
// IsConverted = false.
func TestSOQLEmailIn(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c1 := o.Put(Record{Type: "Contact", Email: "pat@x.test"}).ID
	c2 := o.Put(Record{Type: "Contact", Email: "PAT@X.TEST"}).ID
	c3 := o.Put(Record{Type: "Contact", Email: "o'neil@x.test"}).ID
	o.Put(Record{Type: "Contact", Email: "someone@x.test"})
	l1 := o.Put(Record{Type: "Lead", Email: "Pat@x.test"}).ID
	l2 := o.Put(Record{Type: "Lead", Email: "pat@x.test"}).ID
	if _, err := o.ConvertLead(l2); err != nil {
		t.Fatal(err)
	}
	run := func(q string) []string {
		t.Helper()
		cq, err := compileSOQL(q, o.schemaFor)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var out []string
		for _, rf := range o.st.execute(cq, false) {
			out = append(out, o.st.recs[rf.typ()][rf.idx()].id.String())
		}
		return out
	}
	eq := func(name string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %v want %v", name, got, want)
		}
	}
	contacts := run(`SELECT Id, Email FROM Contact WHERE Email IN ('pat@x.test','o\'neil@x.test')`)
	// The converted Lead's Contact carries the address too.
	if len(contacts) != 4 || contacts[0] != c1 || contacts[1] != c2 || contacts[2] != c3 {
		t.Errorf("contacts by email: got %v want %s %s %s and the converted Lead's Contact", contacts, c1, c2, c3)
	}
	eq("leads by email, converted left out", run("SELECT Id, Email FROM Lead WHERE Email IN ('pat@x.test') AND IsConverted = false"), l1)
	eq("leads by email", run("SELECT Id, Email FROM Lead WHERE Email IN ('PAT@x.test')"), l1, l2)
	eq("no match", run("SELECT Id FROM Contact WHERE Email IN ('nobody@x.test')"))
}
