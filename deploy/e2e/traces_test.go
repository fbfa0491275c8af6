// Package e2e runs the real binaries against a real Jaeger and asserts, through
// Jaeger's query API, that one opt-out is one trace from the publisher through
// the pusher to (emulated) Salesforce. Run with `make e2e-traces` (CI does):
// it builds Jaeger from the Go module proxy, which takes minutes when cold.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/eventstream"
	"github.com/optout-sync/optout-sync/shared/ledger"
	"github.com/optout-sync/optout-sync/shared/natsx"
	"github.com/optout-sync/optout-sync/shared/natsx/natstest"
	"github.com/optout-sync/optout-sync/shared/runs"
	"github.com/optout-sync/optout-sync/shared/tenant"
)

const jaegerQuery = "http://127.0.0.1:16686"

// TestOneOptOutIsOneTraceInJaeger also checks that a reconcile run is a trace
// of its own holding its Salesforce write batch.
func TestOneOptOutIsOneTraceInJaeger(t *testing.T) {
	if os.Getenv("OPTOUT_E2E") != "1" {
		t.Skip("set OPTOUT_E2E=1 (make e2e-traces) to build Jaeger and run the end-to-end trace test")
	}
	requireFree(t, 4317, 4318, 16686)
	root := repoRoot(t)
	bin := t.TempDir()
	jaeger := buildJaeger(t, root)
	pusher := build(t, root, bin, "./services/pusher", "pusher")
	reconciler := build(t, root, bin, "./services/reconciler", "reconciler")
	sandbox := build(t, root, bin, "./services/sfsandbox", "sfsandbox")
	// The run's budget starts once everything is built: on a machine with
	// a cold build cache, building Jaeger alone takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start(t, "jaeger", jaeger, nil)
	waitHTTP(ctx, t, jaegerQuery+"/api/v3/services")

	otelEnv := func(service string) []string {
		return []string{
			"OTEL_SERVICE_NAME=" + service,
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_BSP_SCHEDULE_DELAY=100",
		}
	}
	sbAddr := freeAddr(t)
	start(t, "sfsandbox", sandbox, otelEnv("sfsandbox"), "--listen", sbAddr, "--orgs", filepath.Join(root, "services/sfsandbox/orgs.example.yaml"), "--free-org-ports")
	sbURL := "http://" + sbAddr
	waitHTTP(ctx, t, sbURL+"/_sandbox/orgs")
	contact := seedContact(t, sbURL)

	nc := natstest.Connect(t)
	topo := natstest.Topology(t, nc)
	creds := t.TempDir()
	writeFile(t, filepath.Join(creds, "acme", "token_url"), orgURL(t, sbURL, "acme"))
	writeFile(t, filepath.Join(creds, "acme", "client_id"), "acme-client-id")
	writeFile(t, filepath.Join(creds, "acme", "client_secret"), "acme-client-secret")
	pusherProc := start(t, "pusher", pusher, append(otelEnv("optout-pusher"),
		"NATS_URL="+natstest.URL(), "OPTOUT_NAMESPACE="+topo.Namespace, "OPTOUT_NATS_STORAGE=memory",
		"OPTOUT_ADMIN_ADDR="+freeAddr(t), "OPTOUT_SF_CREDENTIALS_DIR="+creds))

	// The test plays the upstream publisher, exporting its own span to Jaeger.
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL("http://127.0.0.1:4318/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("e2e-publisher"))))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	otel.SetTracerProvider(tp)

	pctx, span := tp.Tracer("e2e").Start(ctx, "unsubscribe clicked")
	js := mustJS(t, nc)
	if _, err := natsx.Provision(ctx, nc, topo); err != nil {
		t.Fatal(err)
	}
	ev := &optoutv1.OptOutEvent{EventId: "e2e-1", TenantId: "acme", Action: optoutv1.Action_UNSUBSCRIBE,
		Person:     &optoutv1.Person{SalesConnectId: "sc-e2e", SalesforceId: contact},
		OccurredAt: timestamppb.Now(), Source: optoutv1.Source_EMAIL_LINK}
	if _, err := eventstream.PublishEvent(pctx, natsx.Publisher{JS: js, Topology: topo}, ev, true); err != nil {
		t.Fatal(err)
	}
	span.End()
	traceID := span.SpanContext().TraceID().String()

	want := map[string]bool{"e2e-publisher": false, "optout-pusher": false, "sfsandbox": false}
	var last string
	for {
		services, body := traceServices(t, traceID)
		last = body
		all := true
		for s := range want {
			want[s] = services[s]
			all = all && services[s]
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("trace %s never held every service: %v\nlast answer: %s", traceID, want, tail(last, 2000))
		case <-time.After(500 * time.Millisecond):
		}
	}
	// A reconcile run is its own trace, holding its Salesforce write batch.
	// The ledger says a second person opted out; Salesforce does not know
	// yet. The pusher is stopped first: the push is level-triggered off the
	// ledger's dirty set and would otherwise make that write itself.
	pusherProc.stop()
	other := seedContact(t, sbURL)
	prov, err := natsx.Provision(ctx, nc, topo)
	if err != nil {
		t.Fatal(err)
	}
	st := tenant.Default("acme")
	st.SyncEnabled = true
	if err := (tenant.Store{KV: prov.Tenants}).Put(ctx, st); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(ctx, prov)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := l.Ingest(ctx, "acme", ledger.EventInput{
		ID: "e2e-2", Action: ledger.OptOut, OccurredAt: time.Now().UTC(), Source: optoutv1.Source_EMAIL_LINK.String(),
		SalesConnectID: "sc-e2e-2", SalesforceID: other, ObjectType: "Contact",
	}, tenant.StandardField); err != nil || res.Entry.State != ledger.StatePending {
		t.Fatalf("seed the second opt-out: %+v %v", res, err)
	}
	recAdmin := freeAddr(t)
	start(t, "reconciler", reconciler, append(otelEnv("optout-reconciler"),
		"NATS_URL="+natstest.URL(), "OPTOUT_NAMESPACE="+topo.Namespace, "OPTOUT_NATS_STORAGE=memory",
		"OPTOUT_ADMIN_ADDR="+recAdmin, "OPTOUT_SF_CREDENTIALS_DIR="+creds, "OPTOUT_LOCK_PREFIX=e2e:"+topo.Namespace+":"))
	waitHTTP(ctx, t, "http://"+recAdmin+"/readyz") // readiness answers 503 until NATS and Redis are up
	var reply runs.ControlReply
	for {
		reply, err = runs.Request(ctx, nc, topo, "acme", runs.ControlRequest{By: "e2e"})
		if err == nil {
			break
		}
		select { // the control subscription may lag readiness by a moment
		case <-ctx.Done():
			t.Fatalf("reconcile request: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !reply.Accepted && reply.Code != "busy" {
		t.Fatalf("reconcile request refused: %+v", reply)
	}
	// The tenant's first catch-up run may do the write before the manual
	// one: take whichever run wrote the record.
	store := runs.Store{KV: prov.Runs}
	var rep runs.Report
	for found := false; !found; {
		history, _ := store.History(ctx, "acme", 10)
		for _, r := range history {
			if r.Status == runs.StatusSucceeded && r.Writes.SalesforceWritten == 1 && r.TraceID != "" {
				rep, found = r, true
			}
		}
		if found {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no reconcile run wrote the missing opt-out; runs: %+v", history)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for {
		services, names, body := traceContents(t, rep.TraceID)
		if services["optout-reconciler"] && names["reconcile.run"] && names["reconcile.write_salesforce_batch"] {
			if services["e2e-publisher"] {
				t.Fatal("the reconcile run joined the publisher's trace; it must be its own")
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run trace %s never held the run and its write batch: %s", rep.TraceID, tail(body, 2000))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// buildJaeger builds the Jaeger binary from deploy/jaeger, a module kept out
// of the workspace so its dependencies do not leak into the services.
func buildJaeger(t *testing.T, root string) string {
	t.Helper()
	out := filepath.Join(root, "bin", "jaeger")
	cmd := exec.Command("go", "build", "-o", out, "github.com/jaegertracing/jaeger/cmd/jaeger")
	cmd.Dir = filepath.Join(root, "deploy", "jaeger")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build jaeger: %v\n%s", err, b)
	}
	return out
}

// traceServices asks Jaeger's API v3 for a trace and returns the service
// names whose spans it holds.
func traceServices(t *testing.T, traceID string) (map[string]bool, string) {
	t.Helper()
	services, _, body := traceContents(t, traceID)
	return services, body
}

// traceContents returns the service names and span names of a trace.
func traceContents(t *testing.T, traceID string) (services, spans map[string]bool, body string) {
	t.Helper()
	resp, err := http.Get(jaegerQuery + "/api/v3/traces/" + traceID)
	if err != nil {
		return nil, nil, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, raw)
	}
	var doc struct {
		Result struct {
			ResourceSpans []struct {
				Resource struct {
					Attributes []struct {
						Key   string `json:"key"`
						Value struct {
							StringValue string `json:"stringValue"`
						} `json:"value"`
					} `json:"attributes"`
				} `json:"resource"`
				ScopeSpans []struct {
					Spans []struct {
						Name string `json:"name"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("jaeger answer: %v: %s", err, tail(string(raw), 500))
	}
	services, spans = map[string]bool{}, map[string]bool{}
	for _, rs := range doc.Result.ResourceSpans {
		for _, a := range rs.Resource.Attributes {
			if a.Key == "service.name" {
				services[a.Value.StringValue] = true
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				spans[sp.Name] = true
			}
		}
	}
	return services, spans, string(raw)
}

func seedContact(t *testing.T, sbURL string) string {
	t.Helper()
	body := bytes.NewBufferString(`{"type":"Contact","Email":"e2e@example.com"}`)
	req, _ := http.NewRequest(http.MethodPut, sbURL+"/_sandbox/orgs/acme/records", body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec struct {
		ID string `json:"Id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || rec.ID == "" {
		t.Fatalf("seed contact: HTTP %d, %v", resp.StatusCode, err)
	}
	return rec.ID
}

// orgURL asks the control API for the org's origin (each org has its own
// free port here, as a real org has its own My Domain).
func orgURL(t *testing.T, sbURL, org string) string {
	t.Helper()
	resp, err := http.Get(sbURL + "/_sandbox/orgs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var orgs []struct {
		Name    string `json:"name"`
		BaseURL string `json:"baseUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&orgs); err != nil {
		t.Fatalf("sandbox orgs: %v", err)
	}
	for _, o := range orgs {
		if o.Name == org && o.BaseURL != "" {
			return o.BaseURL
		}
	}
	t.Fatalf("sandbox has no served org %s: %+v", org, orgs)
	return ""
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
