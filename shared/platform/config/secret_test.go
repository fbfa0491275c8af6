package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestSecretsInAndErrorsHideThem(t *testing.T) {
	env := []string{"NATS_URL=nats://u:pw-1234@h:42x22", "NATS_PASSWORD=hunter22", "NATS_CREDS_FILE=/etc/creds",
		"SF_ACME_TOKEN_URL=https://acme.my.salesforce.com", "OPTOUT_WORKERS=4", "OTEL_EXPORTER_OTLP_HEADERS=authorization=x-9999"}
	got := strings.Join(SecretsIn(env), "|")
	for _, want := range []string{"u:pw-1234", "pw-1234", "hunter22", "authorization=x-9999"} {
		if !strings.Contains(got, want) {
			t.Errorf("SecretsIn misses %q: %s", want, got)
		}
	}
	for _, not := range []string{"/etc/creds", "acme.my.salesforce.com"} {
		if strings.Contains(got, not) {
			t.Errorf("SecretsIn takes %q for a secret", not)
		}
	}
	l := FromMap(map[string]string{"OPTOUT_ADMIN_TOKEN": "tok-secret-1", "OPTOUT_URL": "http://a:pw-5678@x:1x"})
	l.Int("OPTOUT_ADMIN_TOKEN", 0, 0, 1, "")
	l.Int("OPTOUT_URL", 0, 0, 1, "")
	msg := l.Err().Error()
	if strings.Contains(msg, "tok-secret-1") || strings.Contains(msg, "pw-5678") {
		t.Errorf("config error shows a secret: %s", msg)
	}
	if !strings.Contains(msg, "OPTOUT_ADMIN_TOKEN") || !strings.Contains(msg, "x:1x") {
		t.Errorf("config error no longer says where: %s", msg)
	}
}

// TestColonLines: blank lines and comments skipped, line numbers counted
// over every line, a line without ':' reported as such.
func TestColonLines(t *testing.T) {
	var got []string
	err := ColonLines([]byte("# users\n\n  ann:s3cret  \nbob\n"), func(n int, k, v string, ok bool) error {
		got = append(got, fmt.Sprintf("%d %q %q %t", n, k, v, ok))
		return nil
	})
	want := []string{`3 "ann" "s3cret" true`, `4 "bob" "" false`}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ColonLines: %v, %v; want %v", got, err, want)
	}
}
