package config

import (
	"regexp"
	"strings"
)

// Redacted replaces a secret in any output.
const Redacted = "[REDACTED]"

// secretName matches variables whose value is itself a secret (passwords,
// tokens, keys, client secrets, header lists that carry credentials). A
// *_FILE variable holds a path and a *_URL one an address (SF_*_TOKEN_URL),
// which are no secrets; a URL's user info is (MaskUserinfo).
var secretName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|TOKEN|SECRET|(^|_)KEY$|_HEADERS$|(^|_)AUTH$)`)

// userinfo matches the user:password@ of a URL, parsable or not (a parse
// error quotes the URL whole).
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s"'?#]*@`)

// IsSecretName reports whether the variable's value is a secret as a whole.
func IsSecretName(name string) bool {
	return !strings.HasSuffix(name, "_FILE") && !strings.HasSuffix(name, "_URL") && secretName.MatchString(name)
}

// MaskUserinfo hides the credentials of every URL in s, well-formed or not.
func MaskUserinfo(s string) string {
	return userinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
}

// minSecret is the shortest value treated as a secret when scrubbing output:
// masking every "1" or "on" would garble logs and protect nothing.
const minSecret = 4

// SecretsIn returns the secret values of an environment (NAME=value lines):
// the whole value of a secret variable, and the user info and password of
// any URL in any variable (NATS_URL, OPTOUT_REDIS_URL, OTEL endpoints, ...).
// Output writers scrub them, so even an error that quotes its input (a
// parser's) cannot print them.
func SecretsIn(environ []string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= minSecret {
			out = append(out, s)
		}
	}
	for _, kv := range environ {
		name, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			continue
		}
		if IsSecretName(name) {
			add(v)
			continue
		}
		for _, m := range userinfo.FindAllString(v, -1) {
			info := m[strings.Index(m, "://")+3 : len(m)-1]
			add(info)
			if _, pw, ok := strings.Cut(info, ":"); ok {
				add(pw)
			}
		}
	}
	return out
}

// shown is how a variable's value appears in an error.
func shown(name, value string) string {
	if IsSecretName(name) && value != "" {
		return Redacted
	}
	return MaskUserinfo(value)
}
