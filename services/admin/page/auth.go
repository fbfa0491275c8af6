package page

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// MinTokenLength is the shortest bearer token or password accepted: the page
// changes where legal opt-outs are written.
const MinTokenLength = 16

// Auth says who may use the page. Credentials come from a Kubernetes Secret
// mounted as files (re-read when the Secret is rotated, no restart) or, for
// local runs, the environment. Every request must authenticate, reads
// included: the page shows tenants' Salesforce setup and error texts.
type Auth struct {
	// TokenFile holds one bearer token (Authorization: Bearer <token>), for
	// scripts and proxies that inject a header.
	TokenFile string
	// Token is the same as an environment value (local runs).
	Token string
	// UsersFile holds "name:password" lines for HTTP basic auth, which
	// browsers prompt for; the name is logged as who changed a setting.
	UsersFile string
}

// Configured reports whether any credential source is set.
func (a Auth) Configured() bool { return a.TokenFile != "" || a.Token != "" || a.UsersFile != "" }

// AuthFromEnv reads OPTOUT_ADMIN_TOKEN_FILE, OPTOUT_ADMIN_TOKEN and
// OPTOUT_ADMIN_USERS_FILE. None set is valid: the page then refuses every
// request and says how to enable it, and the admin service still starts and
// reports ready, so an install whose admin Secret is not made yet deploys
// and the page itself tells the operator what is missing.
func AuthFromEnv(l *config.Loader) Auth {
	a := Auth{
		TokenFile: l.File("OPTOUT_ADMIN_TOKEN_FILE", "file with the admin page's bearer token (a mounted Secret, at least 16 characters)"),
		Token:     l.String("OPTOUT_ADMIN_TOKEN", "", "the admin page's bearer token (prefer OPTOUT_ADMIN_TOKEN_FILE)"),
		UsersFile: l.File("OPTOUT_ADMIN_USERS_FILE", "file of name:password lines for the admin page's basic auth (browsers prompt; the name is logged as who changed a setting). With none of the three admin variables set the page answers 503 with setup instructions; pushing is unaffected"),
	}
	if a.Token != "" && len(a.Token) < MinTokenLength {
		l.Invalid("OPTOUT_ADMIN_TOKEN", "[redacted]", fmt.Sprintf("want at least %d characters", MinTokenLength))
	}
	return a
}

// credentials are the current secrets.
type credentials struct {
	token string
	users map[string]string
	// csrfKey signs form tokens; derived from the secrets so every replica
	// agrees without sharing state, and rotating the Secret retires old forms.
	csrfKey []byte
}

// authenticator checks requests against the current credentials, re-reading
// the files when they change.
type authenticator struct {
	auth Auth

	mu      sync.Mutex
	stamp   string
	current *credentials
	err     error
}

// load returns the credentials, re-reading the files when their size or
// modification time changed (a kubelet Secret update swaps a symlink, which
// changes both).
func (a *authenticator) load() (*credentials, error) {
	stamp := config.FileStamp(a.auth.TokenFile) + "|" + config.FileStamp(a.auth.UsersFile)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current != nil && stamp == a.stamp {
		return a.current, a.err
	}
	c, err := readCredentials(a.auth)
	a.stamp, a.current, a.err = stamp, c, err
	return c, err
}

func readCredentials(a Auth) (*credentials, error) {
	c := &credentials{token: a.Token, users: map[string]string{}}
	if a.TokenFile != "" {
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return &credentials{}, fmt.Errorf("admin token file: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	if c.token != "" && len(c.token) < MinTokenLength {
		return &credentials{}, fmt.Errorf("admin token is shorter than %d characters", MinTokenLength)
	}
	if a.UsersFile != "" {
		b, err := os.ReadFile(a.UsersFile)
		if err != nil {
			return &credentials{}, fmt.Errorf("admin users file: %w", err)
		}
		err = config.ColonLines(b, func(n int, name, pw string, ok bool) error {
			if !ok || name == "" || len(pw) < MinTokenLength {
				return fmt.Errorf("admin users file line %d: want name:password with a password of at least %d characters", n, MinTokenLength)
			}
			c.users[name] = pw
			return nil
		})
		if err != nil {
			return &credentials{}, err
		}
	}
	if c.token == "" && len(c.users) == 0 {
		return &credentials{}, errNotConfigured
	}
	c.csrfKey = canonicalKey(c)
	return c, nil
}

// canonicalKey derives the CSRF key from the secrets in a fixed order, so
// every replica computes the same key.
func canonicalKey(c *credentials) []byte {
	names := make([]string, 0, len(c.users))
	for n := range c.users {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	h.Write([]byte("optout-sync adminui csrf\x00" + c.token + "\x00"))
	for _, n := range names {
		h.Write([]byte(n + "\x00" + c.users[n] + "\x00"))
	}
	return h.Sum(nil)
}

var errNotConfigured = errors.New("no admin credentials configured: set OPTOUT_ADMIN_USERS_FILE (basic auth) or OPTOUT_ADMIN_TOKEN_FILE (bearer token)")

// authenticate returns who made the request: the basic-auth user name, or
// "token" for the bearer token.
func (c *credentials) authenticate(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if tok, ok := cutPrefixFold(h, "Bearer "); ok && c.token != "" {
		return "token", equal(strings.TrimSpace(tok), c.token)
	}
	if name, pw, ok := r.BasicAuth(); ok {
		want, known := c.users[name]
		// Compare even for an unknown name, so timing does not reveal names.
		if !known {
			want = strings.Repeat("x", MinTokenLength)
		}
		if equal(pw, want) && known {
			return name, true
		}
	}
	return "", false
}

func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// failedAuthDelay slows password guessing a little without a lockout an
// attacker could use to shut admins out.
const failedAuthDelay = 250 * time.Millisecond
