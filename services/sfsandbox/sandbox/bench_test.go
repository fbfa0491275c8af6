package sandbox

import (
	"io"
	"net/http"
	"net/url"
	"runtime"
	"testing"
)

// BenchmarkSeed2M reports the heap used by a 2,000,000-record org.
func BenchmarkSeed2M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sb, err := New(Config{Orgs: []OrgConfig{{Name: "big"}}})
		if err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sb.Org("big").Seed(SeedSpec{Contacts: 1_000_000, Leads: 1_000_000, OptedOutShare: 0.1})
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		runtime.KeepAlive(sb)
	}
}

// BenchmarkQueryAndBulk1M runs a filtered SOQL first page and streams a
// 1,000,000-row bulk result in one page over a 2,000,000-record org.
func BenchmarkQueryAndBulk1M(b *testing.B) {
	e := newEnv(b)
	o := e.org("acme")
	o.SetDailyAPILimit(1 << 30)
	o.Seed(SeedSpec{Contacts: 1_000_000, Leads: 1_000_000, OptedOutShare: 0.1})
	tok := tokenFor(b, e)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := get(b, e, tok, "/query?q="+url.QueryEscape("SELECT Id, HasOptedOutOfEmail FROM Contact WHERE HasOptedOutOfEmail = true ORDER BY SystemModstamp, Id"))
		res.Body.Close()
		job := o.newJob("query", jobRequest{Operation: "query", ColumnDelimiter: "COMMA", LineEnding: "LF"}, "62.0")
		cq, _ := compileSOQL("SELECT Id, HasOptedOutOfEmail, SystemModstamp FROM Contact", o.schemaFor)
		job.cq, job.refs, job.state, job.object = cq, o.st.execute(cq, false), stateJobComplete, "Contact"
		o.addJob(job)
		res = get(b, e, tok, "/jobs/query/"+job.id+"/results?maxRecords=1000000")
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.Header.Get("Sforce-NumberOfRecords") != "1000000" {
			b.Fatalf("rows %s", res.Header.Get("Sforce-NumberOfRecords"))
		}
		b.ReportMetric(float64(n)/(1<<20), "MiB-csv")
	}
}

func tokenFor(b *testing.B, e *env) string {
	res, err := http.PostForm(e.base("acme")+"/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"acme-id"}, "client_secret": {"acme-secret"}})
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := decodeJSON(res.Body, &body); err != nil {
		b.Fatal(err)
	}
	return body.AccessToken
}

func get(b *testing.B, e *env, tok, path string) *http.Response {
	req, _ := http.NewRequest("GET", e.base("acme")+"/services/data/v62.0"+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		b.Fatalf("GET %s: %v %v", path, err, res)
	}
	return res
}
