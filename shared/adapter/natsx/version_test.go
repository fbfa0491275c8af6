package natsx_test

import (
	"testing"

	"github.com/optout-sync/optout-sync/shared/adapter/natsx"
	"github.com/optout-sync/optout-sync/shared/adapter/natsx/natstest"
)

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for v, ok := range map[string]bool{
		"2.10.23": true, "2.10.24": true, "2.11.0": true, "2.15.2": true, "3.0.0": true, "v2.12.1": true,
		"2.11.0-RC.1": true, "2.10.22": false, "2.10.20": false, "2.9.10": false, "1.99.99": false,
		"": false, "2.10": false, "two.ten.23": false, "2.10.x": false,
	} {
		if err := natsx.CheckServerVersion(v); (err == nil) != ok {
			t.Errorf("CheckServerVersion(%q) = %v; want supported=%v", v, err, ok)
		}
	}
}

// TestTheTestServerIsSupported: the tests prove what they claim only on a
// server users may run (make test starts the current one).
func TestTheTestServerIsSupported(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t)
	if err := natsx.CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		t.Fatalf("tests run against %s: %v", natstest.URL(), err)
	}
}
