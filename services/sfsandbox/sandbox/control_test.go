package sandbox

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestControlAPI(t *testing.T) {
	e := newEnv(t)
	ctl := func(method, path string, body any) resp {
		t.Helper()
		var rd *strings.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = strings.NewReader(string(b))
		} else {
			rd = strings.NewReader("")
		}
		return e.raw(method, "/_sandbox/orgs"+path, rd, map[string]string{"Content-Type": "application/json"})
	}
	var orgs []map[string]any
	ctl("GET", "", nil).json(t, &orgs)
	if len(orgs) != 2 || orgs[0]["name"] != "acme" || orgs[0]["tokenUrl"] != e.base("acme")+"/services/oauth2/token" {
		t.Errorf("orgs: %v", orgs)
	}
	var seeded struct {
		Created int          `json:"created"`
		Records []recordJSON `json:"records"`
	}
	ctl("POST", "/acme/seed", map[string]any{"contacts": 3, "leads": 2, "optedOutShare": 0.5}).json(t, &seeded)
	if seeded.Created != 5 || len(seeded.Records) != 5 {
		t.Fatalf("seed: %+v", seeded)
	}
	lead := seeded.Records[3].ID
	contact := seeded.Records[0].ID
	var rec recordJSON
	if r := ctl("PUT", "/acme/records", map[string]any{"type": "Contact", "Email": "new@x.test"}); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	} else {
		r.json(t, &rec)
	}
	if len(rec.ID) != 18 || rec.Email != "new@x.test" {
		t.Errorf("put: %+v", rec)
	}
	before, _ := e.org("acme").Get(contact)
	e.clock.Advance(1e9)
	ctl("PATCH", "/acme/records/"+contact+"?as=automation", map[string]any{"HasOptedOutOfEmail": true}).json(t, &rec)
	if !rec.HasOptedOutOfEmail || !rec.SystemModstamp.After(before.SystemModstamp) || !rec.LastModifiedDate.Equal(before.LastModifiedDate) {
		t.Errorf("automation edit: %+v", rec)
	}
	e.clock.Advance(1e9)
	ctl("PATCH", "/acme/records/"+contact[:15], map[string]any{"Email": "u@x.test"}).json(t, &rec)
	if rec.Email != "u@x.test" || !rec.LastModifiedDate.After(before.LastModifiedDate) {
		t.Errorf("user edit: %+v", rec)
	}
	ctl("DELETE", "/acme/records/"+contact, nil).json(t, &rec)
	if !rec.IsDeleted {
		t.Error("delete")
	}
	if r := ctl("DELETE", "/acme/records/"+contact, nil); r.status != 409 {
		t.Errorf("delete twice: %d", r.status)
	}
	ctl("POST", "/acme/records/"+contact+"/undelete", nil).json(t, &rec)
	if rec.IsDeleted {
		t.Error("undelete")
	}
	ctl("POST", "/acme/records/"+lead+"/convert", nil).json(t, &rec)
	if rec.Type != "Contact" {
		t.Errorf("convert: %+v", rec)
	}
	if l, _ := e.org("acme").Get(lead); !l.IsConverted || l.ConvertedContactID != rec.ID {
		t.Errorf("converted lead: %+v", l)
	}
	var fault map[string]string
	ctl("POST", "/acme/faults", map[string]any{"route": "limits", "status": 503, "delay": "1ms", "times": 1}).json(t, &fault)
	tok := e.token("acme")
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 503 {
		t.Errorf("fault via control: %d", r.status)
	}
	if r := ctl("DELETE", "/acme/faults/"+fault["id"], nil); r.status != 404 {
		t.Errorf("fault removed after Times: %d", r.status)
	}
	ctl("PUT", "/acme/custom-field", map[string]any{"installed": false})
	if e.org("acme").Config().CustomFieldInstalled {
		t.Error("custom-field")
	}
	var usage map[string]int
	ctl("PUT", "/acme/api-usage", map[string]any{"used": 1000}).json(t, &usage)
	if usage["used"] != 1000 || usage["max"] != 1000 {
		t.Errorf("usage %v", usage)
	}
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 403 {
		t.Errorf("exhausted: %d", r.status)
	}
	var calls struct {
		APICalls int        `json:"apiCalls"`
		Calls    []callJSON `json:"calls"`
	}
	ctl("GET", "/acme/calls", nil).json(t, &calls)
	if calls.APICalls != 1000 || len(calls.Calls) < 3 || calls.Calls[len(calls.Calls)-1].Status != 403 {
		t.Errorf("calls: %+v", calls)
	}
	if r := ctl("POST", "/acme/tokens/expire", nil); r.status != 204 {
		t.Errorf("expire: %d", r.status)
	}
	ctl("PUT", "/acme/api-usage", map[string]any{"used": 0})
	if r := e.api(tok, "GET", "acme", "/limits", nil); r.status != 401 {
		t.Errorf("expired token: %d", r.status)
	}
	if r := ctl("PUT", "/acme/latency", map[string]any{"latency": "0s"}); r.status != 204 {
		t.Errorf("latency: %d", r.status)
	}
	if r := ctl("GET", "/acme/nope", nil); r.status != 404 {
		t.Errorf("unknown route: %d", r.status)
	}
	var changes []Change
	ctl("GET", "/acme/changes", nil).json(t, &changes)
	if len(changes) < 5 {
		t.Errorf("changes: %v", changes)
	}
}
