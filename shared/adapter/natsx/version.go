package natsx

import (
	"fmt"
	"strconv"
	"strings"
)

// MinServerVersion is the oldest nats-server optout-sync supports. Jepsen's
// analysis of NATS 2.12.1 (December 2025) found that 2.10.20-2.10.22 could
// lose whole streams on a process crash, fixed in 2.10.23. (Its other
// finding, acknowledged writes lost on power failure under the default
// fsync policy, is configuration: deploy/README.md, sync_interval.)
const MinServerVersion = "2.10.23"

// CheckServerVersion returns an error when version, as a server reports it
// ("2.15.2", "2.11.0-RC.1"), is older than MinServerVersion or unreadable.
func CheckServerVersion(version string) error {
	got, ok := parseVersion(version)
	if !ok {
		return fmt.Errorf("nats-server version %q is unreadable; optout-sync needs %s or later", version, MinServerVersion)
	}
	minimum, _ := parseVersion(MinServerVersion)
	for i := range got {
		if got[i] != minimum[i] {
			if got[i] < minimum[i] {
				return fmt.Errorf("nats-server %s is older than %s, the oldest optout-sync supports (docs/operations.md#the-nats-server)", version, MinServerVersion)
			}
			return nil
		}
	}
	return nil
}

// parseVersion reads major.minor.patch, ignoring a pre-release or build
// suffix: a release candidate of a supported version is accepted.
func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}
