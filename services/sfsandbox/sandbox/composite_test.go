package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type compositeAnswer struct {
	CompositeResponse []struct {
		Body           json.RawMessage   `json:"body"`
		HTTPHeaders    map[string]string `json:"httpHeaders"`
		HTTPStatusCode int               `json:"httpStatusCode"`
		ReferenceID    string            `json:"referenceId"`
	} `json:"compositeResponse"`
}

func sub(method, ref, path string, body any) map[string]any {
	m := map[string]any{"method": method, "referenceId": ref, "url": "/services/data/v62.0" + path}
	if body != nil {
		m["body"] = body
	}
	return m
}

func queryPath(soql string) string { return "/query?q=" + url.QueryEscape(soql) }

func composite(allOrNone bool, collate bool, subs ...map[string]any) map[string]any {
	return map[string]any{"allOrNone": allOrNone, "collateSubrequests": collate, "compositeRequest": subs}
}

// The read and the write of one composite run in order, in one API call:
// the read sees the values from before the write.
func TestCompositeReadsThenWritesInOneCall(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	set := o.Put(Record{Type: "Contact", HasOptedOutOfEmail: true})
	clear := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	e.clock.Advance(time.Second)
	before := o.APICalls()
	r := e.api(tok, "POST", "acme", "/composite", composite(false, false,
		sub("GET", "q", queryPath("SELECT Id, HasOptedOutOfEmail FROM Contact WHERE Id IN ('"+set.ID+"','"+clear.ID+"')"), nil),
		sub("PATCH", "w", "/composite/sobjects", map[string]any{"allOrNone": false, "records": []collRec{
			upd("Contact", set.ID, optOut()), upd("Contact", clear.ID, optOut())}}),
	))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := o.APICalls() - before; got != 1 {
		t.Errorf("composite counted %d API calls, want 1", got)
	}
	if !strings.Contains(r.header.Get("Sforce-Limit-Info"), fmt.Sprintf("api-usage=%d/", o.APICalls())) {
		t.Errorf("Sforce-Limit-Info %q", r.header.Get("Sforce-Limit-Info"))
	}
	var ans compositeAnswer
	r.json(t, &ans)
	if len(ans.CompositeResponse) != 2 || ans.CompositeResponse[0].ReferenceID != "q" || ans.CompositeResponse[1].ReferenceID != "w" {
		t.Fatalf("answer %s", r.body)
	}
	var q struct {
		Records []map[string]any `json:"records"`
	}
	_ = json.Unmarshal(ans.CompositeResponse[0].Body, &q)
	pre := map[string]any{}
	for _, rec := range q.Records {
		pre[rec["Id"].(string)] = rec["HasOptedOutOfEmail"]
	}
	if pre[set.ID] != true || pre[clear.ID] != false {
		t.Errorf("the read saw %v, want the values before the write", pre)
	}
	var saves []saveResult
	_ = json.Unmarshal(ans.CompositeResponse[1].Body, &saves)
	if ans.CompositeResponse[1].HTTPStatusCode != 200 || len(saves) != 2 || !saves[0].Success || !saves[1].Success {
		t.Errorf("write answered %d %s", ans.CompositeResponse[1].HTTPStatusCode, ans.CompositeResponse[1].Body)
	}
	if got, _ := o.Get(clear.ID); !got.HasOptedOutOfEmail {
		t.Error("the write did not land")
	}
	calls := o.Calls()
	last := calls[len(calls)-1]
	if last.Route != RouteComposite || !last.Counted || len(last.Subrequests) != 2 ||
		last.Subrequests[0].Route != RouteQuery || last.Subrequests[1].Route != RouteCollectionsUpdate || last.Records != 2 {
		t.Errorf("call log %+v", last)
	}
	// A record already true is rewritten as true: its LastModifiedDate moves.
	if got, _ := o.Get(set.ID); !got.LastModifiedDate.After(set.LastModifiedDate) {
		t.Errorf("rewriting a true record left LastModifiedDate at %v", got.LastModifiedDate)
	}
}

// Collated subrequests without references may run in any order; the
// emulator runs them last-first so order-dependent clients are caught.
func TestCompositeCollatedSubrequestsAreNotOrdered(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	r := e.api(tok, "POST", "acme", "/composite", map[string]any{"compositeRequest": []map[string]any{
		sub("GET", "q", queryPath("SELECT Id, HasOptedOutOfEmail FROM Contact WHERE Id = '"+c.ID+"'"), nil),
		sub("PATCH", "w", "/sobjects/Contact/"+c.ID, optOut()),
	}})
	var ans compositeAnswer
	r.json(t, &ans)
	if !bytes.Contains(ans.CompositeResponse[0].Body, []byte(`"HasOptedOutOfEmail":true`)) {
		t.Errorf("collated read ran before the write: %s", ans.CompositeResponse[0].Body)
	}
}

func TestCompositeLimitsAndHeaders(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	many := func(n int, mk func(i int) map[string]any) []map[string]any {
		var out []map[string]any
		for i := range n {
			out = append(out, mk(i))
		}
		return out
	}
	cases := map[string][]map[string]any{
		"26 subrequests": many(26, func(i int) map[string]any { return sub("GET", fmt.Sprintf("g%d", i), "/sobjects/Contact/"+c.ID, nil) }),
		"6 queries": many(6, func(i int) map[string]any {
			return sub("GET", fmt.Sprintf("q%d", i), queryPath("SELECT Id FROM Contact"), nil)
		}),
		"Authorization header": {{"method": "GET", "referenceId": "a", "url": "/services/data/v62.0/sobjects/Contact/" + c.ID,
			"httpHeaders": map[string]string{"Authorization": "Bearer x"}}},
		"Content-Type header": {{"method": "GET", "referenceId": "a", "url": "/services/data/v62.0/sobjects/Contact/" + c.ID,
			"httpHeaders": map[string]string{"content-type": "text/plain"}}},
		"bad referenceId": {sub("GET", "_a", "/sobjects/Contact/"+c.ID, nil)},
		"bad url":         {{"method": "GET", "referenceId": "a", "url": "/sobjects/Contact/" + c.ID}},
		"unsupported":     {sub("GET", "a", "/limits", nil)},
		"empty":           {},
	}
	for name, subs := range cases {
		before := len(o.Calls())
		r := e.api(tok, "POST", "acme", "/composite", map[string]any{"compositeRequest": subs})
		if r.status != 400 || !bytes.Contains(r.body, []byte(codeCompositeInput)) {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
		if calls := o.Calls(); len(calls) != before+1 || len(calls[len(calls)-1].Subrequests) != 0 {
			t.Errorf("%s: ran subrequests of a refused request", name)
		}
	}
	// 5 collection/query subrequests and 25 in all are fine.
	subs := many(5, func(i int) map[string]any {
		return sub("GET", fmt.Sprintf("q%d", i), queryPath("SELECT Id FROM Contact"), nil)
	})
	subs = append(subs, many(20, func(i int) map[string]any { return sub("GET", fmt.Sprintf("g%d", i), "/sobjects/Contact/"+c.ID, nil) })...)
	if r := e.api(tok, "POST", "acme", "/composite", composite(false, false, subs...)); r.status != 200 {
		t.Errorf("25 subrequests, 5 queries: %d %s", r.status, r.body)
	}
}

// allOrNone:true undoes every write when one subrequest fails; the
// others answer 400 PROCESSING_HALTED, and the outer flag overrides the
// collection's own.
func TestCompositeAllOrNoneRollsBack(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	a := o.Put(Record{Type: "Contact"})
	b := o.Put(Record{Type: "Contact"})
	del := o.Put(Record{Type: "Contact"})
	_ = o.Delete(del.ID)
	tok := e.token("acme")
	changes := len(o.Changes())
	r := e.api(tok, "POST", "acme", "/composite", composite(true, false,
		sub("PATCH", "one", "/sobjects/Contact/"+a.ID, optOut()),
		sub("PATCH", "coll", "/composite/sobjects", map[string]any{"allOrNone": false, "records": []collRec{
			upd("Contact", b.ID, optOut()), upd("Contact", del.ID, optOut())}}),
		sub("GET", "after", "/sobjects/Contact/"+a.ID, nil),
	))
	var ans compositeAnswer
	r.json(t, &ans)
	if r.status != 200 || len(ans.CompositeResponse) != 3 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for _, i := range []int{0, 2} {
		if s := ans.CompositeResponse[i]; s.HTTPStatusCode != 400 || !bytes.Contains(s.Body, []byte(codeHalted)) {
			t.Errorf("subrequest %d: %d %s", i, s.HTTPStatusCode, s.Body)
		}
	}
	if s := ans.CompositeResponse[1]; !bytes.Contains(s.Body, []byte("ALL_OR_NONE_OPERATION_ROLLED_BACK")) {
		t.Errorf("collection did not take the outer allOrNone: %s", s.Body)
	}
	for _, id := range []string{a.ID, b.ID} {
		if got, _ := o.Get(id); got.HasOptedOutOfEmail {
			t.Errorf("%s written despite the rollback", id)
		}
	}
	if len(o.Changes()) != changes {
		t.Error("a rolled-back write reached the change feed")
	}

	// allOrNone:false: each subrequest answers on its own.
	r = e.api(tok, "POST", "acme", "/composite", composite(false, false,
		sub("PATCH", "one", "/sobjects/Contact/"+a.ID, optOut()),
		sub("PATCH", "gone", "/sobjects/Contact/"+del.ID, optOut()),
	))
	r.json(t, &ans)
	if ans.CompositeResponse[0].HTTPStatusCode != 204 || ans.CompositeResponse[1].HTTPStatusCode != 404 {
		t.Errorf("independent subrequests: %s", r.body)
	}
	if got, _ := o.Get(a.ID); !got.HasOptedOutOfEmail {
		t.Error("independent write did not land")
	}
}

func TestCompositeReferences(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact", Email: "a@x.test"})
	tok := e.token("acme")
	r := e.api(tok, "POST", "acme", "/composite", composite(false, true,
		sub("GET", "q", queryPath("SELECT Id FROM Contact WHERE Id = '"+c.ID+"'"), nil),
		sub("PATCH", "w", "/sobjects/Contact/@{q.records[0].Id}", optOut()),
		sub("GET", "missing", "/sobjects/Contact/@{q.records[5].Id}", nil),
	))
	var ans compositeAnswer
	r.json(t, &ans)
	if ans.CompositeResponse[1].HTTPStatusCode != 204 {
		t.Errorf("referencing write: %s", r.body)
	}
	if s := ans.CompositeResponse[2]; s.HTTPStatusCode != 400 || !bytes.Contains(s.Body, []byte(codeHalted)) {
		t.Errorf("unresolved reference: %d %s", s.HTTPStatusCode, s.Body)
	}
	if got, _ := o.Get(c.ID); !got.HasOptedOutOfEmail {
		t.Error("the referencing write did not land")
	}
}

// Faults reach the composite as a whole (RouteComposite) and each
// subrequest by its own route.
func TestCompositeFaults(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	c := o.Put(Record{Type: "Contact"})
	tok := e.token("acme")
	body := func(id string) map[string]any {
		return composite(false, false,
			sub("GET", "q", queryPath("SELECT Id, HasOptedOutOfEmail FROM Contact WHERE Id IN ('"+id+"')"), nil),
			sub("PATCH", "w", "/composite/sobjects", map[string]any{"records": []collRec{upd("Contact", id, optOut())}}))
	}
	send := func(b map[string]any) (*http.Response, error) {
		data, _ := json.Marshal(b)
		req, _ := http.NewRequest("POST", e.base("acme")+"/services/data/v62.0/composite", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		return e.srv.Client().Do(req)
	}
	// The answer is lost after the writes were applied.
	o.InjectFault(Fault{Route: RouteComposite, DropAfterWrite: true, Times: 1})
	if res, err := send(body(c.ID)); err == nil {
		res.Body.Close()
		t.Error("DropAfterWrite answered")
	}
	if got, _ := o.Get(c.ID); !got.HasOptedOutOfEmail {
		t.Error("DropAfterWrite did not apply the write")
	}
	// Dropped before: nothing written.
	c2 := o.Put(Record{Type: "Contact"})
	o.InjectFault(Fault{Route: RouteComposite, DropBeforeWrite: true, Times: 1})
	if res, err := send(body(c2.ID)); err == nil {
		res.Body.Close()
		t.Error("DropBeforeWrite answered")
	}
	if got, _ := o.Get(c2.ID); got.HasOptedOutOfEmail {
		t.Error("DropBeforeWrite applied the write")
	}
	// A call-level error answers the whole composite.
	o.InjectFault(Fault{Route: RouteComposite, Status: 503, Times: 1})
	if r := e.api(tok, "POST", "acme", "/composite", body(c2.ID)); r.status != 503 {
		t.Errorf("composite fault: %d %s", r.status, r.body)
	}
	// A fault on the query route fails the read only; the write still answers.
	o.InjectFault(Fault{Route: RouteQuery, ErrorCode: "INVALID_FIELD", Times: 1})
	r := e.api(tok, "POST", "acme", "/composite", body(c2.ID))
	var ans compositeAnswer
	r.json(t, &ans)
	if r.status != 200 || ans.CompositeResponse[0].HTTPStatusCode != 400 || ans.CompositeResponse[1].HTTPStatusCode != 200 {
		t.Errorf("query fault: %s", r.body)
	}
	// A per-record drop inside the collection loses the composite's answer.
	c3 := o.Put(Record{Type: "Contact"})
	o.InjectFault(Fault{Route: RouteCollectionsUpdate, RecordID: c3.ID, DropAfterWrite: true, Times: 1})
	if res, err := send(body(c3.ID)); err == nil {
		res.Body.Close()
		t.Error("per-record DropAfterWrite answered")
	}
	if got, _ := o.Get(c3.ID); !got.HasOptedOutOfEmail {
		t.Error("per-record DropAfterWrite did not apply the write")
	}
}
