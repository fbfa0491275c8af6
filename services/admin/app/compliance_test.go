package app_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/compliance"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// metricValue reads tenant's sample of a gauge from /metrics (ok false while
// there is none).
func metricValue(t *testing.T, base, name, tenant string) (float64, bool) {
	t.Helper()
	code, body := get(t, base+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, `tenant="`+tenant+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

// waitMetric polls /metrics until tenant's sample of name satisfies ok.
func waitMetric(t *testing.T, base, name, tenant string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, found := metricValue(t, base, name, tenant)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{tenant=%q} never as wanted: last %v (found %v)", name, tenant, v, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestComplianceClockShowsTheOldestUnhonouredOptOut: an opt-out Salesforce
// has not confirmed for 30 hours shows on the tenant page with both
// deadlines and in the metrics; once Salesforce confirms it, the clock is
// back to 0 and the page says nothing waits.
func TestComplianceClockShowsTheOldestUnhonouredOptOut(t *testing.T) {
	t.Parallel()
	base, a := startApp(t, map[string]string{"OPTOUT_ADMIN_TOKEN": token})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	led, err := ledger.New(ctx, a.Prov)
	if err != nil {
		t.Fatal(err)
	}
	w := led.Writer("clk", optout.StandardField)
	asked := time.Now().UTC().Add(-30 * time.Hour).Truncate(time.Second)
	// A newer opt-out of another person, also waiting: the clock shows the older.
	if _, err := w.Ingest(ctx, optout.EventInput{ID: "c2", Action: optout.OptOut, OccurredAt: asked.Add(2 * time.Hour),
		Source: "EMAIL_LINK", SalesforceID: "003000000000002AAA", ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}
	res, err := w.Ingest(ctx, optout.EventInput{ID: "c1", Action: optout.OptOut, OccurredAt: asked, Source: "EMAIL_LINK",
		SalesforceID: "003000000000001AAA", ObjectType: "Contact"})
	if err != nil {
		t.Fatal(err)
	}
	// A resubscribed person owes nothing.
	if _, err := w.Ingest(ctx, optout.EventInput{ID: "c3", Action: optout.Resubscribe, OccurredAt: asked.Add(-time.Hour),
		Source: "EMAIL_LINK", SalesforceID: "003000000000003AAA", ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}

	age := waitMetric(t, base, "optout_compliance_oldest_unhonoured_seconds", "clk", func(v float64) bool { return v >= 30*3600 })
	if age > 31*3600 {
		t.Errorf("oldest unhonoured: %v s, want the 30 h opt-out's age", age)
	}
	if n, _ := metricValue(t, base, "optout_compliance_unhonoured", "clk"); n != 2 {
		t.Errorf("unhonoured: %v, want 2", n)
	}
	d, _ := metricValue(t, base, "optout_compliance_oldest_unhonoured_business_days", "clk")
	if want := compliance.BusinessDays(asked, time.Now()); d > want || d < want-0.01 {
		t.Errorf("business days: %v, want about %v", d, want)
	}

	code, body := get(t, base+"/admin/tenants/clk", "Bearer "+token)
	if code != http.StatusOK {
		t.Fatalf("tenant page: %d\n%s", code, body)
	}
	for _, want := range []string{
		"Compliance clock", `<p class="notice warn"><strong>2</strong> opt-out(s) not yet honoured`, asked.Format(time.RFC3339),
		"48 hours", asked.Add(48 * time.Hour).Format(time.RFC3339), "10 business days", "CAN-SPAM", res.Key,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the tenant page does not show %q:\n%s", want, body)
		}
	}

	// Salesforce confirms both: nothing is owed any more.
	for _, sf := range []string{"003000000000001AAA", "003000000000002AAA"} {
		if _, err := w.Update(ctx, optout.Key("clk", "", sf), optout.ObservedStep(sf, optout.StandardField, true)); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, base, "optout_compliance_oldest_unhonoured_seconds", "clk", func(v float64) bool { return v == 0 })
	if n, _ := metricValue(t, base, "optout_compliance_unhonoured", "clk"); n != 0 {
		t.Errorf("unhonoured after the confirmations: %v, want 0", n)
	}
	_, body = get(t, base+"/admin/tenants/clk", "Bearer "+token)
	if !strings.Contains(body, "nothing is on the clock") {
		t.Errorf("after the confirmations the page still shows a wait:\n%s", body)
	}
}
