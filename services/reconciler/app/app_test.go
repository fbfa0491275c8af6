package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/optout-sync/optout-sync/services/reconciler/app"
	"github.com/optout-sync/optout-sync/shared/platform/config"
)

func TestDefaultsAreValid(t *testing.T) {
	l := config.FromMap(map[string]string{})
	c := app.Load(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if c.LeaseTTL != time.Minute || c.Engine.APIShare != 0.2 || c.Engine.ResubscribeMin != 10 || c.Redis.Addr != "127.0.0.1:6379" ||
		c.LockPrefix != "optout:reconcile:" || c.Engine.Read.BulkThreshold != 10000 {
		t.Fatalf("defaults %+v", c)
	}
	if c := app.Load(config.FromMap(map[string]string{"OPTOUT_NAMESPACE": "dev1"})); c.LockPrefix != "optout:dev1:reconcile:" {
		t.Fatalf("namespaced lock prefix %q", c.LockPrefix)
	}
}

// Every bad value is reported, one line per variable, and a Redis URL's
// password never appears in the message.
func TestBadValuesAreEachReported(t *testing.T) {
	l := config.FromMap(map[string]string{
		"OPTOUT_REDIS_URL":                   "http://user:s3cret@redis:6379",
		"OPTOUT_LEASE_TTL":                   "2s",
		"OPTOUT_RECONCILE_READ_MODE":         "fast",
		"OPTOUT_RECONCILE_API_SHARE":         "1.5",
		"OPTOUT_RECONCILE_WRITE_BATCH":       "500",
		"OPTOUT_RECONCILE_RESUBSCRIBE_SHARE": "x",
		"OPTOUT_ADMIN_ADDR":                  "9090",
	})
	app.Load(l)
	err := l.Err()
	if err == nil {
		t.Fatal("bad values accepted")
	}
	msg := err.Error()
	for _, name := range []string{"OPTOUT_REDIS_URL", "OPTOUT_LEASE_TTL", "OPTOUT_RECONCILE_READ_MODE", "OPTOUT_RECONCILE_API_SHARE",
		"OPTOUT_RECONCILE_WRITE_BATCH", "OPTOUT_RECONCILE_RESUBSCRIBE_SHARE", "OPTOUT_ADMIN_ADDR"} {
		if !strings.Contains(msg, name) {
			t.Errorf("%s not reported in:\n%s", name, msg)
		}
	}
	if strings.Contains(msg, "s3cret") {
		t.Error("the Redis password leaked into the error")
	}
}
