package logx

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// Variables holding the per-install key of HashEmail.
const (
	EnvEmailHashKeyFile = "OPTOUT_EMAIL_HASH_KEY_FILE"
	EnvEmailHashKey     = "OPTOUT_EMAIL_HASH_KEY"
)

// MinEmailHashKeyLen is the shortest key accepted: a short key could be
// guessed, and then every hash could be reversed with a list of addresses.
const MinEmailHashKeyLen = 16

// emailHashKey is read on every HashEmail (many goroutines) and set once at
// start-up, hence atomic. Until SetEmailHashKey is called it is a random
// per-process key: hashes are consistent within the process (a log line and
// a span about one person still correlate) but unlinkable across processes.
var emailHashKey atomic.Pointer[[]byte]

// emailHashKeyed: SetEmailHashKey installed the install's key.
var emailHashKeyed atomic.Bool

func init() {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	emailHashKey.Store(&k)
}

// SetEmailHashKey sets the key HashEmail uses. Services call it once at
// start-up with the per-install secret (EmailHashKeyFromEnv) so hashes in
// logs and the ledger correlate across replicas and restarts. An empty key
// is ignored: the random per-process key stays.
func SetEmailHashKey(key []byte) {
	if len(key) == 0 {
		return
	}
	k := bytes.Clone(key)
	emailHashKey.Store(&k)
	emailHashKeyed.Store(true)
}

// EmailHashKeyed reports whether the install's key is set (SetEmailHashKey),
// not a random one of this process: only then does HashEmail of an address
// match the emailHash other services stored in the ledger.
func EmailHashKeyed() bool { return emailHashKeyed.Load() }

// HashEmail returns a stable pseudonymous identifier for an email address,
// "email:" followed by the first 12 hex digits of HMAC-SHA256, keyed by the
// per-install secret, of the trimmed, lower-cased address. Keyed, because a
// bare hash of an address is reversed by hashing a list of known addresses.
// Redact produces the same token, so a log line and a span about the same
// person can be correlated without the address itself.
func HashEmail(addr string) string {
	m := hmac.New(sha256.New, *emailHashKey.Load())
	m.Write([]byte(strings.ToLower(strings.TrimSpace(addr))))
	return "email:" + hex.EncodeToString(m.Sum(nil))[:12]
}

// EmailHashKeyFromEnv reads the per-install key from OPTOUT_EMAIL_HASH_KEY_FILE
// (a mounted Secret; preferred) or OPTOUT_EMAIL_HASH_KEY. It returns nil when
// neither is set; a key shorter than MinEmailHashKeyLen, or both variables
// set, is a configuration error. Surrounding whitespace (a trailing newline
// in a Secret file) is not part of the key.
func EmailHashKeyFromEnv(l *config.Loader) []byte {
	file := l.File(EnvEmailHashKeyFile, "file holding the per-install secret (at least 16 characters, one Secret shared by every service and replica) that keys the email hashes in logs, traces and the ledger's emailHash, so hashes match across services and restarts but cannot be reversed from a list of addresses. Unset: each process uses a random key and logs a warning")
	value := l.String(EnvEmailHashKey, "", "the same key as a value (local runs; prefer "+EnvEmailHashKeyFile+"; not both)")
	switch {
	case file != "" && value != "":
		l.Invalid(EnvEmailHashKey, "[set]", "set either "+EnvEmailHashKeyFile+" or "+EnvEmailHashKey+", not both")
		return nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			l.Invalid(EnvEmailHashKeyFile, file, fmt.Sprintf("unreadable: %v", err))
			return nil
		}
		key := bytes.TrimSpace(b)
		if len(key) < MinEmailHashKeyLen {
			l.Invalid(EnvEmailHashKeyFile, file, fmt.Sprintf("the key in the file must have at least %d characters", MinEmailHashKeyLen))
			return nil
		}
		return key
	case value != "":
		key := []byte(strings.TrimSpace(value))
		if len(key) < MinEmailHashKeyLen {
			// The value is a secret: never echo it.
			l.Invalid(EnvEmailHashKey, "[redacted]", fmt.Sprintf("want at least %d characters", MinEmailHashKeyLen))
			return nil
		}
		return key
	}
	return nil
}
