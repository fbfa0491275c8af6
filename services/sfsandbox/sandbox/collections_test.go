package sandbox

import (
	"testing"
)

type collRec map[string]any

func upd(typ, id string, fields map[string]any) collRec {
	r := collRec{"attributes": map[string]string{"type": typ}}
	if id != "" {
		r["id"] = id
	}
	for k, v := range fields {
		r[k] = v
	}
	return r
}

func optOut() map[string]any { return map[string]any{"HasOptedOutOfEmail": true} }

func TestCollectionsUpdateMixed(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	l := o.Put(Record{Type: "Lead"})
	del := o.Put(Record{Type: "Contact"})
	_ = o.Delete(del.ID)
	conv := o.Put(Record{Type: "Lead"})
	_, _ = o.ConvertLead(conv.ID)
	locked := o.Put(Record{Type: "Contact"})
	o.InjectFault(Fault{Route: RouteCollectionsUpdate, RecordID: locked.ID[:15], ErrorCode: "UNABLE_TO_LOCK_ROW"})
	tok := e.token("acme")
	body := map[string]any{"allOrNone": false, "records": []collRec{
		upd("Contact", c.ID, optOut()),
		upd("Contact", l.ID, optOut()), // Lead id sent as Contact
		upd("Contact", del.ID, optOut()),
		upd("Contact", "", optOut()),
		upd("Contact", c.ID, map[string]any{"Foo__c": true}),
		upd("Contact", locked.ID, optOut()),
		upd("Lead", l.ID, optOut()),
		upd("Lead", conv.ID, optOut()),
		upd("Lead", makeID(prefixLead, 777777).String(), optOut()),
	}}
	r := e.api(tok, "PATCH", "acme", "/composite/sobjects", body)
	golden(t, "collections_mixed", r, "Sforce-Limit-Info")
	var res []saveResult
	r.json(t, &res)
	wantOK := []bool{true, false, false, false, false, false, true, false, false}
	for i, ok := range wantOK {
		if res[i].Success != ok {
			t.Errorf("item %d success=%v: %+v", i, res[i].Success, res[i])
		}
		if !ok && res[i].ID != "" {
			t.Errorf("failed item %d has id", i)
		}
	}
	if got, _ := o.Get(c.ID); !got.HasOptedOutOfEmail {
		t.Error("contact not written")
	}
	if got, _ := o.Get(locked.ID); got.HasOptedOutOfEmail {
		t.Error("locked record written")
	}
	if o.APICalls() != 1 {
		t.Errorf("collection counted %d calls", o.APICalls())
	}
	if calls := o.Calls(); calls[len(calls)-1].Records != 9 || !calls[len(calls)-1].AssignmentRules {
		t.Errorf("call log %+v", calls[len(calls)-1])
	}
}

func TestCollectionsAllOrNone(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	a := o.Put(Record{Type: "Contact"})
	b := o.Put(Record{Type: "Contact"})
	_ = o.Delete(b.ID)
	r := e.api(e.token("acme"), "PATCH", "acme", "/composite/sobjects", map[string]any{"allOrNone": true,
		"records": []collRec{upd("Contact", a.ID, optOut()), upd("Contact", b.ID, optOut())}})
	var res []saveResult
	r.json(t, &res)
	if r.status != 200 || res[0].Success || res[0].Errors[0].StatusCode != "ALL_OR_NONE_OPERATION_ROLLED_BACK" || res[1].Errors[0].StatusCode != "ENTITY_IS_DELETED" {
		t.Errorf("got %d %s", r.status, r.body)
	}
	if got, _ := o.Get(a.ID); got.HasOptedOutOfEmail {
		t.Error("rolled back record was written")
	}
}

func TestCollectionsRequestErrors(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	l := o.Put(Record{Type: "Lead"})
	tok := e.token("acme")
	many := make([]collRec, 201)
	for i := range many {
		many[i] = upd("Contact", c.ID, optOut())
	}
	var chunky []collRec
	for i := 0; i < 11; i++ {
		if i%2 == 0 {
			chunky = append(chunky, upd("Contact", c.ID, optOut()))
		} else {
			chunky = append(chunky, upd("Lead", l.ID, optOut()))
		}
	}
	dup := []collRec{upd("Contact", c.ID, optOut()), upd("Contact", c.ID[:15], optOut())}
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"empty", map[string]any{"records": []collRec{}}, 400, "REQUIRED_FIELD_MISSING"},
		{"over 200", map[string]any{"records": many}, 400, "EXCEEDED_ID_LIMIT"},
		{"11 chunks", map[string]any{"records": chunky}, 400, "INVALID_BATCH_REQUEST"},
		{"bad json", "{", 400, "JSON_PARSER_ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.api(tok, "PATCH", "acme", "/composite/sobjects", tc.body)
			if r.status != tc.status || errCode(t, r) != tc.code {
				t.Errorf("got %d %s", r.status, r.body)
			}
		})
	}
	if r := e.api(tok, "PATCH", "acme", "/composite/sobjects", map[string]any{"records": chunky[:10]}); r.status != 200 {
		t.Errorf("10 chunks refused: %d", r.status)
	}
	r := e.api(tok, "PATCH", "acme", "/composite/sobjects", map[string]any{"records": dup})
	var res []saveResult
	r.json(t, &res)
	if !res[0].Success || res[1].Success || res[1].Errors[0].StatusCode != "DUPLICATE_VALUE" {
		t.Errorf("duplicates: %s", r.body)
	}
}

func TestCollectionsRetrieve(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	a := o.Put(Record{Type: "Contact", HasOptedOutOfEmail: true})
	l := o.Put(Record{Type: "Lead"})
	tok := e.token("acme")
	ids := a.ID + "," + l.ID + ",bogus," + makeID(prefixContact, 424242).String() + "," + a.ID[:15]
	r := e.api(tok, "GET", "acme", "/composite/sobjects/Contact?ids="+ids+"&fields=Id,HasOptedOutOfEmail", nil)
	var got []map[string]any
	r.json(t, &got)
	if r.status != 200 || len(got) != 5 || got[0]["Id"] != a.ID || got[1] != nil || got[2] != nil || got[3] != nil || got[4]["Id"] != a.ID || got[0]["HasOptedOutOfEmail"] != true {
		t.Errorf("GET retrieve: %d %s", r.status, r.body)
	}
	r = e.api(tok, "POST", "acme", "/composite/sobjects/Lead", map[string]any{"ids": []string{l.ID, a.ID}, "fields": []string{"Id", "IsConverted"}})
	got = nil
	r.json(t, &got)
	if r.status != 200 || got[0]["Id"] != l.ID || got[1] != nil {
		t.Errorf("POST retrieve: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "GET", "acme", "/composite/sobjects/Contact?ids="+a.ID+"&fields=Id,Nope__c", nil); r.status != 400 || errCode(t, r) != "INVALID_FIELD" {
		t.Errorf("unknown field: %d %s", r.status, r.body)
	}
}
