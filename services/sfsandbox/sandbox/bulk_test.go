package sandbox

import (
	"encoding/csv"
	"strings"
	"testing"
)

func createQueryJob(t *testing.T, e *env, tok, soql string) string {
	t.Helper()
	r := e.api(tok, "POST", "acme", "/jobs/query", map[string]string{"operation": "query", "query": soql, "columnDelimiter": "COMMA", "lineEnding": "LF"})
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var info map[string]any
	r.json(t, &info)
	return info["id"].(string)
}

func pollUntil(t *testing.T, e *env, tok, kind, id, want string) map[string]any {
	t.Helper()
	for i := 0; i < 10; i++ {
		r := e.api(tok, "GET", "acme", "/jobs/"+kind+"/"+id, nil)
		var info map[string]any
		r.json(t, &info)
		if info["state"] == want {
			return info
		}
	}
	t.Fatalf("job %s never reached %s", id, want)
	return nil
}

func TestBulkQuery50k(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	o.Seed(SeedSpec{Contacts: 50000, OptedOutShare: 0.1})
	tok := e.token("acme")
	r := e.api(tok, "POST", "acme", "/jobs/query", map[string]string{"operation": "query", "query": "SELECT Id, HasOptedOutOfEmail, SystemModstamp FROM Contact", "columnDelimiter": "COMMA", "lineEnding": "LF"})
	golden(t, "bulk_job_created", r)
	if !strings.Contains(string(r.body), `"apiVersion":62.0,`) {
		t.Errorf("apiVersion must be the number 62.0: %s", r.body)
	}
	var info map[string]any
	r.json(t, &info)
	id := info["id"].(string)
	if r := e.api(tok, "GET", "acme", "/jobs/query/"+id+"/results", nil); r.status != 412 || errCode(t, r) != "JOB_NOT_COMPLETE" {
		t.Errorf("results before complete: %d %s", r.status, r.body)
	}
	r = e.api(tok, "GET", "acme", "/jobs/query/"+id, nil)
	r.json(t, &info)
	if info["state"] != "InProgress" {
		t.Errorf("first poll state %v", info["state"])
	}
	r = e.api(tok, "GET", "acme", "/jobs/query/"+id, nil)
	golden(t, "bulk_job_complete", r)
	if r := e.raw("GET", e.base("acme")+"/services/data/v63.0/jobs/query/"+id+"/results", nil, map[string]string{"Authorization": "Bearer " + tok}); r.status != 409 {
		t.Errorf("version mismatch: %d", r.status)
	}
	seen := map[string]bool{}
	opted := 0
	loc, pages := "", 0
	for {
		path := "/jobs/query/" + id + "/results?maxRecords=10000"
		if loc != "" {
			path += "&locator=" + loc
		}
		r := e.api(tok, "GET", "acme", path, nil)
		if r.status != 200 || r.header.Get("Content-Type") != "text/csv" {
			t.Fatalf("results: %d %s", r.status, r.header.Get("Content-Type"))
		}
		pages++
		if pages == 1 && !strings.HasPrefix(string(r.body), "\"Id\",\"HasOptedOutOfEmail\",\"SystemModstamp\"\n\"003") {
			t.Fatalf("csv head %q", r.body[:80])
		}
		rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if n := r.header.Get("Sforce-NumberOfRecords"); n != "10000" || len(rows) != 10001 {
			t.Fatalf("page rows %s / %d", n, len(rows))
		}
		for _, row := range rows[1:] {
			if seen[row[0]] || (row[1] != "true" && row[1] != "false") || !strings.HasSuffix(row[2], "Z") {
				t.Fatalf("row %v", row)
			}
			seen[row[0]] = true
			if row[1] == "true" {
				opted++
			}
		}
		loc = r.header.Get("Sforce-Locator")
		if loc == "null" {
			break
		}
	}
	if pages != 5 || len(seen) != 50000 || opted != 5000 {
		t.Errorf("pages %d rows %d opted %d", pages, len(seen), opted)
	}
	// locators are re-readable
	if r := e.api(tok, "GET", "acme", "/jobs/query/"+id+"/results?maxRecords=1&locator="+encodeLocator(49999), nil); r.header.Get("Sforce-Locator") != "null" || r.header.Get("Sforce-NumberOfRecords") != "1" {
		t.Errorf("last row page: %v", r.header)
	}
	if r := e.api(tok, "DELETE", "acme", "/jobs/query/"+id, nil); r.status != 204 {
		t.Errorf("delete: %d", r.status)
	}
	if r := e.api(tok, "GET", "acme", "/jobs/query/"+id, nil); r.status != 404 {
		t.Errorf("deleted job: %d", r.status)
	}
}

func TestBulkQueryStatesAndFaults(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.BulkResultsBeforeComplete = "204" })
	o := e.org("acme")
	o.Seed(SeedSpec{Contacts: 10})
	tok := e.token("acme")
	id := createQueryJob(t, e, tok, "SELECT Id FROM Contact")
	if r := e.api(tok, "GET", "acme", "/jobs/query/"+id+"/results", nil); r.status != 204 {
		t.Errorf("204 mode: %d", r.status)
	}
	r := e.api(tok, "PATCH", "acme", "/jobs/query/"+id, map[string]string{"state": "Aborted"})
	var info map[string]any
	r.json(t, &info)
	if r.status != 200 || info["state"] != "Aborted" {
		t.Errorf("abort: %d %s", r.status, r.body)
	}
	if st, _ := o.BulkJobState(id); st != "Aborted" {
		t.Errorf("state %s", st)
	}
	if r := e.api(tok, "PATCH", "acme", "/jobs/query/"+id, map[string]string{"state": "Aborted"}); r.status != 400 {
		t.Errorf("abort twice: %d", r.status)
	}
	// Fault: the next poll fails the job
	id2 := createQueryJob(t, e, tok, "SELECT Id FROM Contact")
	o.InjectFault(Fault{Route: RouteBulkQueryGet, BulkState: "Failed", Message: "InternalServerError : boom", Times: 1})
	r = e.api(tok, "GET", "acme", "/jobs/query/"+id2, nil)
	info = nil
	r.json(t, &info)
	if info["state"] != "Failed" || info["errorMessage"] != "InternalServerError : boom" {
		t.Errorf("failed job: %s", r.body)
	}
	// control: force state
	id3 := createQueryJob(t, e, tok, "SELECT Id FROM Contact")
	if err := o.SetBulkJobState(id3, "Aborted", ""); err != nil {
		t.Fatal(err)
	}
	// bad queries fail at create
	r = e.api(tok, "POST", "acme", "/jobs/query", map[string]string{"operation": "query", "query": "SELECT Nope FROM Contact"})
	if r.status != 400 || errCode(t, r) != "INVALID_FIELD" {
		t.Errorf("bad query: %d %s", r.status, r.body)
	}
	r = e.api(tok, "POST", "acme", "/jobs/query", map[string]string{"operation": "insert", "query": "SELECT Id FROM Contact"})
	if r.status != 400 {
		t.Errorf("bad operation: %d", r.status)
	}
	// time mode
	e2 := newEnv(t, func(c *Config) { c.Orgs[0].Behavior.BulkAdvance = "time" })
	e2.org("acme").Seed(SeedSpec{Contacts: 3})
	tok2 := e2.token("acme")
	jid := createQueryJob(t, e2, tok2, "SELECT Id FROM Contact")
	e2.clock.Advance(5e9)
	r = e2.api(tok2, "GET", "acme", "/jobs/query/"+jid, nil)
	info = nil
	r.json(t, &info)
	if info["state"] != "JobComplete" || info["numberRecordsProcessed"] != float64(3) {
		t.Errorf("time mode: %s", r.body)
	}
}

func TestBulkIngest(t *testing.T) {
	e := newEnv(t)
	o := e.org("acme")
	a := o.Put(Record{Type: "Contact"})
	b := o.Put(Record{Type: "Contact"})
	gone := o.Put(Record{Type: "Contact"})
	_ = o.Delete(gone.ID)
	locked := o.Put(Record{Type: "Contact"})
	o.InjectFault(Fault{Route: RouteBulkIngestRow, RecordID: locked.ID, ErrorCode: "UNABLE_TO_LOCK_ROW"})
	tok := e.token("acme")
	r := e.api(tok, "POST", "acme", "/jobs/ingest", map[string]string{"object": "Contact", "operation": "update", "contentType": "CSV", "lineEnding": "LF"})
	var info map[string]any
	r.json(t, &info)
	id, _ := info["id"].(string)
	if r.status != 200 || info["state"] != "Open" || info["contentUrl"] != "services/data/v62.0/jobs/ingest/"+id+"/batches" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	csvBody := "Id,HasOptedOutOfEmail\n" + a.ID + ",true\n" + b.ID[:15] + ",\n" + gone.ID + ",true\n" + locked.ID + ",true\nbogus,true\n"
	if r := e.api(tok, "PUT", "acme", "/jobs/ingest/"+id+"/batches", csvBody); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := e.api(tok, "PATCH", "acme", "/jobs/ingest/"+id, map[string]string{"state": "UploadComplete"}); r.status != 200 {
		t.Fatalf("close: %d %s", r.status, r.body)
	}
	info = pollUntil(t, e, tok, "ingest", id, "JobComplete")
	if info["numberRecordsProcessed"] != float64(5) || info["numberRecordsFailed"] != float64(3) {
		t.Errorf("counts: %v", info)
	}
	if got, _ := o.Get(a.ID); !got.HasOptedOutOfEmail {
		t.Error("row not applied")
	}
	if got, _ := o.Get(b.ID); got.HasOptedOutOfEmail {
		t.Error("empty cell changed the field")
	}
	ok := e.api(tok, "GET", "acme", "/jobs/ingest/"+id+"/successfulResults", nil)
	rows, _ := csv.NewReader(strings.NewReader(string(ok.body))).ReadAll()
	if len(rows) != 3 || strings.Join(rows[0], ",") != "sf__Id,sf__Created,Id,HasOptedOutOfEmail" || rows[1][0] != a.ID {
		t.Errorf("successfulResults: %q", ok.body)
	}
	failed := e.api(tok, "GET", "acme", "/jobs/ingest/"+id+"/failedResults", nil)
	rows, _ = csv.NewReader(strings.NewReader(string(failed.body))).ReadAll()
	if len(rows) != 4 || rows[0][1] != "sf__Error" || !strings.HasPrefix(rows[1][1], "ENTITY_IS_DELETED:") || !strings.HasPrefix(rows[2][1], "UNABLE_TO_LOCK_ROW:") || !strings.HasPrefix(rows[3][1], "MALFORMED_ID:") {
		t.Errorf("failedResults: %q", failed.body)
	}
	if un := e.api(tok, "GET", "acme", "/jobs/ingest/"+id+"/unprocessedrecords", nil); un.status != 200 {
		t.Errorf("unprocessed: %d", un.status)
	}
	// unknown column fails the job
	r = e.api(tok, "POST", "acme", "/jobs/ingest", map[string]string{"object": "Lead", "operation": "update"})
	r.json(t, &info)
	id2 := info["id"].(string)
	e.api(tok, "PUT", "acme", "/jobs/ingest/"+id2+"/batches", "Id,Foo__c\n00QRO0000000001,true\n")
	e.api(tok, "PATCH", "acme", "/jobs/ingest/"+id2, map[string]string{"state": "UploadComplete"})
	info = pollUntil(t, e, tok, "ingest", id2, "Failed")
	if info["errorMessage"] != "InvalidBatch : Field name not found : Foo__c" {
		t.Errorf("failed ingest: %v", info)
	}
}
