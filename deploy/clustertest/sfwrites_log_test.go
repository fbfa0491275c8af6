package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
)

// The write log sees the records a /composite writes (the sales field) as
// well as those of a plain Collections call (Email Opt Out). Light: no
// cluster needed.
func TestWriteLogSeesCollectionAndCompositeWrites(t *testing.T) {
	org := sandbox.OrgConfig{Name: "acme", ClientID: "acme-id", ClientSecret: "acme-secret", DailyAPILimit: 1000,
		CustomField: "Sales_Opt_Out__c", CustomFieldInstalled: true, CustomFieldWritable: true}
	log := &writeLog{}
	sb, err := sandbox.New(sandbox.Config{Orgs: []sandbox.OrgConfig{org}})
	if err != nil {
		t.Fatal(err)
	}
	l := sandbox.ServeLocal(sb, log.wrap)
	t.Cleanup(l.Close)
	o := sb.Org("acme")
	a, b := o.Put(sandbox.Record{Type: "Contact"}), o.Put(sandbox.Record{Type: "Contact", CustomOptOut: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := salesforce.New(ctx, salesforce.Config{TokenURL: l.OrgURL("acme"), ClientID: "acme-id", ClientSecret: "acme-secret", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateOptOut(ctx, []salesforce.Update{{ID: a.ID, Field: "HasOptedOutOfEmail", Value: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAndUpdate(ctx, []salesforce.ReadUpdate{
		{Update: salesforce.Update{ID: a.ID, Field: "Sales_Opt_Out__c", Value: true}, Read: true},
		{Update: salesforce.Update{ID: b.ID, Field: "Sales_Opt_Out__c", Value: true}, Read: true},
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, w := range log.all() {
		if w.OK && w.Value {
			got[w.RecordID+" "+w.Field]++
		}
	}
	want := map[string]int{a.ID + " HasOptedOutOfEmail": 1, a.ID + " Sales_Opt_Out__c": 1, b.ID + " Sales_Opt_Out__c": 1}
	if len(got) != len(want) {
		t.Fatalf("logged %v; want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("logged %v; want %v", got, want)
		}
	}
}
