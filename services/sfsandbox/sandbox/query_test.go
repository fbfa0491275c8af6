package sandbox

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

type queryPage struct {
	TotalSize      int              `json:"totalSize"`
	Done           bool             `json:"done"`
	NextRecordsURL string           `json:"nextRecordsUrl"`
	Records        []map[string]any `json:"records"`
}

func q(soql string) string { return "/query?q=" + url.QueryEscape(soql) }

func TestQueryPagination(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	o.Seed(SeedSpec{Contacts: 2000, Leads: 10, OptedOutShare: 0.25})
	tok := e.token("acme")
	r := e.api(tok, "GET", "acme", q("SELECT Id, HasOptedOutOfEmail, SystemModstamp FROM Contact ORDER BY Id"), nil, "Sforce-Query-Options", "batchSize=500")
	var page queryPage
	r.json(t, &page)
	trimmed := page
	trimmed.Records = page.Records[:2]
	b, _ := json.Marshal(trimmed)
	golden(t, "query_page_next", resp{status: r.status, header: r.header, body: b}, "Sforce-Limit-Info")
	seen := map[string]bool{}
	pages := 0
	for {
		pages++
		if page.TotalSize != 2000 {
			t.Fatalf("totalSize %d", page.TotalSize)
		}
		for _, rec := range page.Records {
			id := rec["Id"].(string)
			attrs := rec["attributes"].(map[string]any)
			if attrs["type"] != "Contact" || attrs["url"] != "/services/data/v62.0/sobjects/Contact/"+id || seen[id] {
				t.Fatalf("record %v (dup=%v)", rec, seen[id])
			}
			seen[id] = true
		}
		if page.Done {
			break
		}
		if !strings.HasPrefix(page.NextRecordsURL, "/services/data/v62.0/query/01g") {
			t.Fatalf("nextRecordsUrl %q", page.NextRecordsURL)
		}
		r = e.raw("GET", e.base("acme")+page.NextRecordsURL, nil, map[string]string{"Authorization": "Bearer " + tok})
		page = queryPage{}
		r.json(t, &page)
	}
	if pages != 4 || len(seen) != 2000 {
		t.Errorf("pages %d rows %d", pages, len(seen))
	}
	// defaults: 2000 per page; batchSize clamps to 200..2000; queryAll locator path works too
	r = e.api(tok, "GET", "acme", q("SELECT Id FROM Contact"), nil)
	page = queryPage{}
	r.json(t, &page)
	if !page.Done || len(page.Records) != 2000 {
		t.Errorf("default batch: done=%v n=%d", page.Done, len(page.Records))
	}
	r = e.api(tok, "GET", "acme", "/queryAll?q="+url.QueryEscape("SELECT Id FROM Contact"), nil, "Sforce-Query-Options", "batchSize=10")
	page = queryPage{}
	r.json(t, &page)
	if len(page.Records) != 200 {
		t.Errorf("clamped batch %d", len(page.Records))
	}
	loc := strings.TrimPrefix(page.NextRecordsURL, "/services/data/v62.0/query/")
	r = e.api(tok, "GET", "acme", "/queryAll/"+loc, nil)
	page = queryPage{}
	r.json(t, &page)
	// the cursor keeps the batch size it was opened with
	if r.status != 200 || len(page.Records) != 200 || page.Done || !strings.HasSuffix(page.NextRecordsURL, "-400") {
		t.Errorf("queryAll locator: %d %d", r.status, len(page.Records))
	}
	r = e.api(tok, "GET", "acme", q("SELECT Id FROM Lead WHERE Id = '003RO0000035WQg'"), nil)
	if string(r.body) != `{"totalSize":0,"done":true,"records":[]}`+"\n" {
		t.Errorf("empty result %s", r.body)
	}
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	o.Seed(SeedSpec{Contacts: 300})
	gone := o.Put(Record{Type: "Contact"})
	_ = o.Delete(gone.ID)
	tok := e.token("acme")
	golden(t, "malformed_query", e.api(tok, "GET", "acme", q("SELECT Id FRM Contact"), nil), "Sforce-Limit-Info")
	golden(t, "invalid_field_query", e.api(tok, "GET", "acme", q("SELECT Id, Foo__c FROM Contact"), nil), "Sforce-Limit-Info")
	if r := e.api(e.token("globex"), "GET", "globex", q("SELECT "+DefaultCustomField+" FROM Lead"), nil); r.status != 400 || errCode(t, r) != "INVALID_FIELD" {
		t.Errorf("uninstalled field: %d", r.status)
	}
	long := "SELECT Id FROM Contact WHERE Id IN ('" + strings.Repeat("003RO0000035WQgYAM','", 900) + "003RO0000035WQgYAM')"
	if r := e.api(tok, "GET", "acme", q(long), nil); r.status != 414 {
		t.Errorf("long URI: %d", r.status)
	}
	for _, loc := range []string{"01gRO0000000099AAA-200", "garbage"} {
		if r := e.api(tok, "GET", "acme", "/query/"+loc, nil); r.status != 400 || errCode(t, r) != "INVALID_QUERY_LOCATOR" {
			t.Errorf("locator %s: %d %s", loc, r.status, r.body)
		}
	}
	r := e.api(tok, "GET", "acme", q("SELECT Id FROM Contact"), nil, "Sforce-Query-Options", "batchSize=200")
	var page queryPage
	r.json(t, &page)
	if page.TotalSize != 300 {
		t.Errorf("query includes deleted: %d", page.TotalSize)
	}
	o.ExpireQueryLocators()
	if r := e.raw("GET", e.base("acme")+page.NextRecordsURL, nil, map[string]string{"Authorization": "Bearer " + tok}); r.status != 400 || errCode(t, r) != "INVALID_QUERY_LOCATOR" {
		t.Errorf("expired locator: %d", r.status)
	}
	r = e.api(tok, "GET", "acme", "/queryAll?q="+url.QueryEscape("SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true"), nil)
	page = queryPage{}
	r.json(t, &page)
	if page.TotalSize != 1 || page.Records[0]["IsDeleted"] != true {
		t.Errorf("queryAll: %s", r.body)
	}
}
