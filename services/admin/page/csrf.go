package page

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// csrfLifetime bounds how long a rendered form can be submitted.
const csrfLifetime = 12 * time.Hour

// Browsers resend basic-auth credentials on cross-site requests, so a form
// post needs proof it came from our page. Two layers: Go's
// CrossOriginProtection rejects cross-origin posts by Sec-Fetch-Site and
// Origin, and every form carries this token, an HMAC over who, which tenant
// and when, keyed by the Secret (stateless, so any replica accepts it).

func csrfToken(key []byte, actor, tenant string, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return ts + "." + base64.RawURLEncoding.EncodeToString(csrfMAC(key, actor, tenant, ts))
}

func csrfValid(key []byte, token, actor, tenant string, now time.Time) bool {
	ts, sig, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	issued := time.Unix(sec, 0)
	if now.Sub(issued) > csrfLifetime || issued.After(now.Add(time.Minute)) {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	return hmac.Equal(got, csrfMAC(key, actor, tenant, ts))
}

func csrfMAC(key []byte, actor, tenant, ts string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(actor + "\x00" + tenant + "\x00" + ts))
	return m.Sum(nil)
}
