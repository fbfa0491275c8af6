package suppression

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/optout-sync/optout-sync/shared/domain/event"
	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// MinTokenLength is the shortest API token accepted.
const MinTokenLength = 16

// tokens are the API tokens, each scoped to one tenant, kept as SHA-256
// digests: a presented token's digest is compared with every one in
// constant time (a few microseconds for thousands of tokens), so neither
// timing nor a map's probe order says how close a guess came.
type tokens struct {
	digests [][sha256.Size]byte
	tenants []string
}

// tenantOf returns the tenant token is scoped to.
func (t *tokens) tenantOf(token string) (string, bool) {
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range t.digests {
		if subtle.ConstantTimeCompare(d[:], t.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return t.tenants[found], true
}

// parseTokens reads "tenant:token" lines (blank lines and # comments
// skipped). A tenant may have several tokens, so one can be rotated
// without a gap. Errors name the line number, never its text.
func parseTokens(b []byte) (*tokens, error) {
	t := &tokens{}
	seen := map[[sha256.Size]byte]string{}
	err := config.ColonLines(b, func(n int, tenant, tok string, ok bool) error {
		tenant, tok = strings.TrimSpace(tenant), strings.TrimSpace(tok)
		switch {
		case !ok || !event.ValidTenant(tenant):
			return fmt.Errorf("suppression tokens file line %d: want tenant:token with a tenant of 1-64 characters from A-Z a-z 0-9 _ -", n)
		case len(tok) < MinTokenLength:
			return fmt.Errorf("suppression tokens file line %d: the token must have at least %d characters", n, MinTokenLength)
		}
		d := sha256.Sum256([]byte(tok))
		if other, dup := seen[d]; dup {
			if other != tenant {
				return fmt.Errorf("suppression tokens file line %d: the token is already given to another tenant", n)
			}
			return nil
		}
		seen[d] = tenant
		t.digests, t.tenants = append(t.digests, d), append(t.tenants, tenant)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(t.digests) == 0 {
		return nil, errors.New("suppression tokens file holds no token")
	}
	return t, nil
}

// tokenFile re-reads the tokens file when it changes (a kubelet Secret
// update swaps a symlink, which changes its size or time), looking at most
// once a second so 1,000 requests a second cost one stat a second.
type tokenFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	stamp   string
	current *tokens
	err     error
}

func (f *tokenFile) load() (*tokens, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.current != nil && now.Sub(f.checked) < time.Second {
		return f.current, f.err
	}
	f.checked = now
	stamp := config.FileStamp(f.path)
	if f.current != nil && stamp == f.stamp {
		return f.current, f.err
	}
	f.stamp = stamp
	b, err := os.ReadFile(f.path)
	if err != nil {
		f.current, f.err = &tokens{}, fmt.Errorf("suppression tokens file: %w", err)
		return f.current, f.err
	}
	t, err := parseTokens(b)
	if err != nil {
		t = &tokens{}
	}
	f.current, f.err = t, err
	return t, err
}
