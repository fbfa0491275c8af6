package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/services/admin/app"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/domain/optout"
	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/ledger"
)

// tokensFile writes tenant a's and b's suppression tokens.
func tokensFile(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("a:"+tokenA+"\nb:"+tokenB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestNotReadyUntilTheIndexIsBuilt: a replica that has not read the ledger
// is not ready (a Service sends it nothing) and could only answer
// "unknown"; once /readyz says ready, it answers from the whole ledger at
// once: a person stored before it started is suppressed, an unknown one
// allowed, and nothing is "unknown".
func TestNotReadyUntilTheIndexIsBuilt(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)
	l := config.FromMap(map[string]string{
		"NATS_URL": natstest.URL(), "OPTOUT_NAMESPACE": topo.Namespace, "OPTOUT_NATS_STORAGE": "memory",
		"OPTOUT_NATS_REPLICAS": "1", "OPTOUT_ADMIN_ADDR": "127.0.0.1:0", "OPTOUT_SUPPRESSION_TOKENS_FILE": tokensFile(t),
	})
	cfg := app.Load(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
		a.Close()
	})
	if err := a.Listen(runCtx); err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.Admin.Addr()
	led, err := ledger.New(ctx, a.Prov)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	if _, err := led.Writer("a", optout.StandardField).Ingest(ctx, optout.EventInput{ID: "r1", Action: optout.OptOut,
		OccurredAt: at, Source: "EMAIL_LINK", SalesConnectID: "sc-ada", SalesforceID: sfAda, ObjectType: "Contact",
		EmailHash: logx.HashEmail("ada@example.com")}); err != nil {
		t.Fatal(err)
	}

	// Serving, but the ledger not read (Run, which feeds the index, has not started).
	code, body := get(t, base+"/readyz", "")
	var ready struct {
		Status string
		Failed []string
		Checks map[string]string
	}
	_ = json.Unmarshal([]byte(body), &ready)
	if code != http.StatusServiceUnavailable || len(ready.Failed) != 1 || ready.Failed[0] != "ledger" ||
		!strings.Contains(ready.Checks["ledger"], "reading the ledger") {
		t.Fatalf("/readyz before the index is built: %d %s, want 503 failing check ledger", code, body)
	}
	if code, ans := suppressionGet(t, base, "a", "salesConnectId=sc-nobody", tokenA); code != http.StatusServiceUnavailable || ans.Result != "unknown" {
		t.Fatalf("an answer before the index is built: %d %+v, want 503 unknown", code, ans)
	}

	go func() { done <- a.Run(runCtx) }()
	waitReady(t, base)
	for q, want := range map[string]string{
		"email=ada%40example.com": "suppressed", "salesConnectId=sc-ada": "suppressed",
		"salesConnectId=sc-nobody": "allowed", "salesforceId=" + sfOther: "allowed",
	} {
		if code, ans := suppressionGet(t, base, "a", q, tokenA); code != http.StatusOK || ans.Result != want || !ans.Complete {
			t.Errorf("ready, %s: %d %+v, want %s from a complete index", q, code, ans, want)
		}
	}
}

// scrape reads /metrics the way Prometheus does (its text format parser).
func scrape(t *testing.T, base string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	code, body := get(t, base+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams, body
}

// sample is the value of name's sample whose labels include want (ok
// false when there is none).
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		}
		return v, true
	}
	return 0, false
}

// TestSuppressionMetricsAsPrometheusScrapesThem: the index's size and lag
// and the answers by tenant and outcome, parsed as Prometheus parses a
// scrape; no address or id appears in the metrics.
func TestSuppressionMetricsAsPrometheusScrapesThem(t *testing.T) {
	t.Parallel()
	base, _ := suppressionStack(t) // 3 persons of tenant a; ready
	// suppressionStack asked until the index had caught up (answers that
	// may have been unknown or suppressed): count from here.
	before, _ := scrape(t, base)
	for _, c := range []struct{ tenant, query, token string }{
		{"a", "email=ada%40example.com", tokenA},                               // suppressed
		{"a", "salesConnectId=sc-ada", tokenA},                                 // suppressed
		{"a", "salesConnectId=sc-nobody", tokenA},                              // allowed
		{"b", "salesConnectId=sc-ada", tokenB},                                 // allowed
		{"a", "email=not-an-address", tokenA},                                  // bad_request
		{"b", "salesConnectId=x", tokenA},                                      // forbidden, counted under a
		{"zz-typed-by-anyone", "salesConnectId=x", "no-such-token-0123456789"}, // unauthorized
	} {
		suppressionGet(t, base, c.tenant, c.query, c.token)
	}
	fams, body := scrape(t, base)
	if v, ok := sample(fams, "optout_suppression_index_entries", nil); !ok || v != 3 {
		t.Errorf("optout_suppression_index_entries: %v (found %v), want 3 (Ada's Contact and Lead, Bob)", v, ok)
	}
	if v, ok := sample(fams, "optout_suppression_index_lag_seconds", nil); !ok || v < 0 || v > 60 {
		t.Errorf("optout_suppression_index_lag_seconds: %v (found %v), want a small lag", v, ok)
	}
	for _, c := range []struct {
		tenant, outcome string
		want            float64
	}{
		{"a", "suppressed", 2}, {"a", "allowed", 1}, {"b", "allowed", 1}, {"a", "bad_request", 1},
		{"a", "forbidden", 1}, {"", "unauthorized", 1}, {"a", "unknown", 0},
	} {
		labels := map[string]string{"tenant": c.tenant, "outcome": c.outcome}
		v, ok := sample(fams, "optout_suppression_requests_total", labels)
		was, _ := sample(before, "optout_suppression_requests_total", labels)
		if (!ok && c.want > 0) || v-was != c.want {
			t.Errorf("optout_suppression_requests_total{tenant=%q,outcome=%q}: %v → %v (found %v), want %v more", c.tenant, c.outcome, was, v, ok, c.want)
		}
	}
	// No address, id or unauthenticated path in any sample (HELP text aside).
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, leak := range []string{"ada", "example.com", "sc-", "zz-typed-by-anyone", sfAda, "email:"} {
			if strings.Contains(line, leak) {
				t.Errorf("/metrics holds %q: %s", leak, line)
			}
		}
	}
}

// TestOneLedgerFeedServesTheIndexAndTheClock: the admin service reads the
// ledger once, through one ordered consumer, and that one feed keeps both
// the suppression index and the compliance clock right: an opt-out waiting
// for Salesforce is suppressed and on the clock; confirmed, it stays
// suppressed and leaves the clock. Without tokens the clock is still fed
// and no index is kept.
func TestOneLedgerFeedServesTheIndexAndTheClock(t *testing.T) {
	t.Parallel()
	base, a := startApp(t, map[string]string{"OPTOUT_SUPPRESSION_TOKENS_FILE": tokensFile(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	led, err := ledger.New(ctx, a.Prov)
	if err != nil {
		t.Fatal(err)
	}
	w := led.Writer("a", optout.StandardField)
	asked := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Second)
	if _, err := w.Ingest(ctx, optout.EventInput{ID: "f1", Action: optout.OptOut, OccurredAt: asked, Source: "EMAIL_LINK",
		SalesforceID: sfAda, ObjectType: "Contact", EmailHash: logx.HashEmail("ada@example.com")}); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, base, "optout_compliance_unhonoured", "a", func(v float64) bool { return v == 1 })
	if code, ans := suppressionGet(t, base, "a", "email=ada%40example.com", tokenA); code != http.StatusOK || ans.Result != "suppressed" || !ans.Since.Equal(asked) {
		t.Errorf("waiting for Salesforce: %d %+v, want suppressed since %s", code, ans, asked)
	}
	if c, ok := a.Compliance.Clock("a"); !ok || c.Unhonoured != 1 || !c.OldestSince.Equal(asked) {
		t.Errorf("clock: %+v (%v), want one since %s", c, ok, asked)
	}
	if _, err := w.Update(ctx, optout.Key("a", "", sfAda), optout.ObservedStep(sfAda, optout.StandardField, true)); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, base, "optout_compliance_unhonoured", "a", func(v float64) bool { return v == 0 })
	if code, ans := suppressionGet(t, base, "a", "salesforceId="+sfAda, tokenA); code != http.StatusOK || ans.Result != "suppressed" ||
		len(ans.Records) != 1 || ans.Records[0].SyncState != string(optout.StateSynced) {
		t.Errorf("confirmed: %d %+v, want suppressed, synced", code, ans)
	}
	// One reader of the ledger: one consumer on its stream.
	st, err := a.Prov.JS.Stream(ctx, "KV_"+a.Prov.Ledger.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	names := st.ListConsumers(ctx)
	var n int
	for range names.Info() {
		n++
	}
	if err := names.Err(); err != nil && err != jetstream.ErrEndOfData {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d consumers on the ledger's stream, want the one feed's", n)
	}

	// The API off: the same feed keeps the clock, and no index is held.
	_, off := startApp(t, nil)
	offLed, err := ledger.New(ctx, off.Prov)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := offLed.Writer("a", optout.StandardField).Ingest(ctx, optout.EventInput{ID: "f2", Action: optout.OptOut,
		OccurredAt: asked, Source: "EMAIL_LINK", SalesforceID: sfAda, ObjectType: "Contact"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, ok := off.Compliance.Clock("a"); ok && c.Unhonoured == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("without tokens the compliance clock never saw the opt-out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := off.Suppression.Index().Size(); n != 0 {
		t.Errorf("without tokens the index holds %d persons", n)
	}
}
