package salesforce

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/services/sfsandbox/sandbox"
)

// TestSpansCarryNoIDsTokensOrEmails drives every route, including errors and
// a token refresh, and checks every span name, attribute, event and status.
func TestSpansCarryNoIDsTokensOrEmails(t *testing.T) {
	e := newEnv(t)
	recs := e.org.Seed(sandbox.SeedSpec{Contacts: 250, Leads: 10, OptedOutShare: 0.5})
	c := e.client(t)

	// A parent span: client spans must join the caller's trace.
	ctx, parent := e.tp.Tracer("test").Start(ctxT(t), "push opt-outs")
	var tokens []string
	keepToken := func() {
		if s := c.tokens.cur; s != nil {
			tokens = append(tokens, s.token.AccessToken)
		}
	}

	var ids []string
	var updates []Update
	for _, r := range recs {
		ids = append(ids, r.ID)
		updates = append(updates, Update{ID: r.ID, Field: optOutField, Value: true})
	}
	_, err := c.UpdateOptOut(ctx, updates)
	require.NoError(t, err)
	keepToken()
	require.NoError(t, c.UpdateRecord(ctx, "Contact", ids[0], map[string]any{optOutField: true}))
	_, err = c.Retrieve(ctx, "Contact", ids[:5], []string{"Id", "Email"})
	require.NoError(t, err)
	e.org.ExpireTokens()
	for _, err := range c.QueryIDs(ctx, "Contact", []string{"Id", "Email"}, ids, WithBatchSize(200)) {
		require.NoError(t, err)
	}
	keepToken()
	for _, err := range c.Query(ctx, "SELECT Id, Email FROM Contact WHERE HasOptedOutOfEmail = true", WithBatchSize(200)) {
		require.NoError(t, err)
	}
	require.NoError(t, c.CheckOptOutField(ctx, optOutField))
	_, err = c.Limits(ctx)
	require.NoError(t, err)
	_, err = c.BulkQuery(ctx, "SELECT Id, Email FROM Contact", fastPoll, func(_, _ []string) error { return nil })
	require.NoError(t, err)
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteSObjectPatch, DropBeforeWrite: true, Times: 1})
	require.Error(t, c.UpdateRecord(ctx, "Contact", ids[1], map[string]any{optOutField: true}))
	e.org.InjectFault(sandbox.Fault{Route: sandbox.RouteSObjectPatch, RecordID: ids[2], ErrorCode: "UNABLE_TO_LOCK_ROW", Times: 1})
	require.Error(t, c.UpdateRecord(ctx, "Contact", ids[2], map[string]any{optOutField: true}))
	keepToken()
	parent.End()

	var secrets []string
	for _, id := range ids {
		secrets = append(secrets, id[:15]) // covers the 18-char form too
	}
	for _, r := range recs {
		if r.Email != "" {
			secrets = append(secrets, r.Email)
		}
	}
	require.NotEmpty(t, tokens)
	secrets = append(secrets, tokens...)
	secrets = append(secrets, testSecret, testUsername, "SELECT", "Bearer", "@")

	allowed := map[string]bool{
		"POST /services/oauth2/token":      true,
		"PATCH /composite/sobjects":        true,
		"PATCH /sobjects/Contact/{id}":     true,
		"POST /composite/sobjects/Contact": true,
		"GET /query":                       true,
		"GET /query/{locator}":             true,
		"GET /sobjects/Contact/describe":   true,
		"GET /sobjects/Lead/describe":      true,
		"GET /limits":                      true,
		"POST /jobs/query":                 true,
		"GET /jobs/query/{job}":            true,
		"GET /jobs/query/{job}/results":    true,
		"push opt-outs":                    true,
	}
	spans := e.spans.GetSpans()
	require.Greater(t, len(spans), 15)
	names := map[string]int{}
	for _, s := range spans {
		names[s.Name]++
		assert.True(t, allowed[s.Name], "unexpected span name %q", s.Name)
		if s.Name != "push opt-outs" {
			assert.Equal(t, trace.SpanKindClient, s.SpanKind)
			assert.Equal(t, parent.SpanContext().TraceID(), s.SpanContext.TraceID(), "client spans join the caller's trace")
		}
		texts := []string{s.Name, s.Status.Description}
		for _, a := range s.Attributes {
			texts = append(texts, string(a.Key)+"="+a.Value.String())
		}
		for _, ev := range s.Events {
			texts = append(texts, ev.Name)
			for _, a := range ev.Attributes {
				texts = append(texts, a.Value.String())
			}
		}
		for _, txt := range texts {
			for _, sec := range secrets {
				assert.NotContains(t, txt, sec, "span %q leaks", s.Name)
			}
		}
	}
	for _, n := range []string{"POST /services/oauth2/token", "PATCH /composite/sobjects", "GET /query", "GET /query/{locator}", "GET /jobs/query/{job}/results"} {
		assert.Positive(t, names[n], "no span %q", n)
	}
	// url.full is the template, not the real URL.
	for _, s := range spans {
		for _, a := range s.Attributes {
			if a.Key == "url.full" {
				assert.True(t, strings.HasPrefix(a.Value.AsString(), e.base+"/services/"), a.Value.AsString())
				assert.NotContains(t, a.Value.AsString(), "?")
			}
		}
	}
}
