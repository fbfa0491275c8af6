package logx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	return m
}

func TestLogLineIsRedacted(t *testing.T) {
	t.Setenv(logx.EnvLevel, "")
	var buf bytes.Buffer
	log := logx.WithTenant(logx.New("pusher", &buf), "acme")

	log.Error().
		Str("email", "jane.doe@example.com").
		Str("auth", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig").
		Str("form", "grant_type=client_credentials&client_id=x&client_secret=s3cr3t&password=hunter2").
		Err(errors.New(`salesforce said INVALID_SESSION_ID for 00D5g000000ABCD!AQ4AQFz.x_y for JANE.DOE@example.com`)).
		Msgf("push failed for jane.doe@example.com with Authorization: Bearer abc123")

	line := buf.String()
	hash := logx.HashEmail("jane.doe@example.com")
	for _, leaked := range []string{"jane.doe", "JANE.DOE", "eyJhbGci", "abc123", "s3cr3t", "hunter2", "AQ4AQFz", "00D5g000000ABCD"} {
		assert.NotContains(t, line, leaked)
	}

	m := decode(t, buf.Bytes())
	assert.Equal(t, hash, m["email"])
	assert.Equal(t, "Bearer [REDACTED]", m["auth"])
	assert.Equal(t, "grant_type=client_credentials&client_id=x&client_secret=[REDACTED]&password=[REDACTED]", m["form"])
	assert.Equal(t, "salesforce said INVALID_SESSION_ID for [REDACTED] for "+hash, m["error"])
	assert.Equal(t, "push failed for "+hash+" with Authorization: [REDACTED]", m["message"])
	assert.Equal(t, "pusher", m["service"])
	assert.Equal(t, "acme", m["tenant"])
	assert.Equal(t, "error", m["level"])
	assert.NotEmpty(t, m["time"])
}

func TestRedactRules(t *testing.T) {
	hash := logx.HashEmail("jane.doe@example.com")
	cases := map[string]string{
		"plain text stays":                          "plain text stays",
		"to Jane.Doe@Example.COM.":                  "to " + hash + ".",
		`{"access_token":"00Dxx0000001gEH!AQcAQH"}`: `{"access_token":"[REDACTED]"}`,
		`{\"password\":\"hunter2\"}`:                `{\"password\":\"[REDACTED]\"}`,
		"sid 00Dxx0000001gEHAAY!AQcAQH0dMHZfz972":   "sid [REDACTED]",
		"token: abc":                                "token: [REDACTED]",
		"refresh_token=r1&next_page_token=keep":     "refresh_token=[REDACTED]&next_page_token=keep",
		"secret rotation done":                      "secret rotation done",
	}
	for in, want := range cases {
		assert.Equal(t, want, logx.Redact(in), in)
	}
	assert.Regexp(t, `^email:[0-9a-f]{12}$`, hash)
	assert.Equal(t, hash, logx.HashEmail("  JANE.DOE@example.com "))
}

func TestTraceHook(t *testing.T) {
	t.Setenv(logx.EnvLevel, "")
	var buf bytes.Buffer
	log := logx.New("svc", &buf)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 1},
		SpanID:     trace.SpanID{0x0b, 2},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	log.Info().Ctx(ctx).Msg("with span")
	m := decode(t, buf.Bytes())
	assert.Equal(t, sc.TraceID().String(), m["trace_id"])
	assert.Equal(t, sc.SpanID().String(), m["span_id"])

	buf.Reset()
	log.Info().Msg("no ctx")
	m = decode(t, buf.Bytes())
	assert.NotContains(t, m, "trace_id")
}

func TestLevelFromEnv(t *testing.T) {
	t.Setenv(logx.EnvLevel, "WARN")
	assert.Equal(t, zerolog.WarnLevel, logx.LevelFromEnv())
	var buf bytes.Buffer
	log := logx.New("svc", &buf)
	log.Info().Msg("dropped")
	assert.Zero(t, buf.Len())
	log.Warn().Msg("kept")
	assert.NotZero(t, buf.Len())

	t.Setenv(logx.EnvLevel, "verbose")
	assert.Equal(t, zerolog.InfoLevel, logx.LevelFromEnv(), "unknown level falls back to info")
	t.Setenv(logx.EnvLevel, "debug")
	assert.Equal(t, zerolog.DebugLevel, logx.LevelFromEnv())
}
