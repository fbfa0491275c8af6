package sandbox

import (
	"sync"
	"testing"
)

// TestConcurrentUse runs writers, readers, control edits and bulk jobs at
// once; run with -race to check the locking.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Orgs[0].DailyAPILimit = 100000 })
	o := e.org("acme")
	recs := o.Seed(SeedSpec{Contacts: 400, Leads: 100})
	tok := e.token("acme")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var batch []collRec
				for j := 0; j < 50; j++ {
					r := recs[(w*97+i*50+j)%len(recs)]
					batch = append(batch, upd(r.Type, r.ID, optOut()))
				}
				if r := e.api(tok, "PATCH", "acme", "/composite/sobjects", map[string]any{"records": batch}); r.status != 200 {
					t.Errorf("update: %d", r.status)
				}
				if r := e.api(tok, "GET", "acme", q("SELECT Id FROM Contact WHERE HasOptedOutOfEmail = true"), nil, "Sforce-Query-Options", "batchSize=200"); r.status != 200 {
					t.Errorf("query: %d", r.status)
				}
				_ = o.Edit(recs[(w+i)%len(recs)].ID, func(r *Record) { r.Email = "x@y.z" })
				e.api(tok, "POST", "acme", "/jobs/query", map[string]string{"operation": "query", "query": "SELECT Id FROM Lead"})
				_ = o.Records()
				_ = o.Calls()
			}
		}(w)
	}
	wg.Wait()
	if o.APICalls() != 120 {
		t.Errorf("api calls %d", o.APICalls())
	}
}
