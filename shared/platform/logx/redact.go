package logx

import (
	"io"
	"regexp"
	"slices"
	"strings"
)

// Redacted is the mask written in place of a secret value.
const Redacted = "[REDACTED]"

// Opt-outs are legal records about people: an email address or a credential
// must never leave the process through logs or traces
// (docs/architecture.md#invariants). The rules below are deliberately broad: a false positive
// costs a little readability, a false negative is a data leak.
var (
	// secretKV masks the value of well-known secret keys in query strings,
	// form bodies, JSON (also JSON embedded in a JSON string, hence the
	// optional backslash before quotes) and "key: value" text.
	secretKV = regexp.MustCompile(`(?i)(\b(?:access_token|refresh_token|id_token|client_secret|client_assertion|password|passwd|secret|api_key|apikey|private_key|session_id|sessionid|authorization|token)\b(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?)(?:(?:bearer|basic)\s+)?[^\s"'&,;}\\]+`)

	// bearer masks tokens in Authorization-style text outside a key/value.
	bearer = regexp.MustCompile(`(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*`)

	// sfSession matches Salesforce session ids / OAuth access tokens, which
	// are the 15 or 18 character org id (prefix 00D), "!", then the token.
	sfSession = regexp.MustCompile(`\b00D[A-Za-z0-9]{12,15}![^\s"'&,;}\\]+`)

	// jwt matches compact JWS tokens (id tokens, JWT bearer assertions).
	jwt = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)

	email = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}`)

	// anything is a cheap pre-filter so clean strings (the vast majority)
	// are returned without running every rule or allocating.
	anything = regexp.MustCompile(`(?i)@|bearer|00D[A-Za-z0-9]{12,15}!|eyJ|token|secret|passw|api_?key|private_key|session_?id|authorization`)
)

// Redact returns s with email addresses replaced by their HashEmail token and
// secrets (bearer tokens, access_token, client_secret, password, Salesforce
// session ids, JWTs, ...) replaced by [REDACTED].
func Redact(s string) string {
	if !anything.MatchString(s) {
		return s
	}
	// Secrets first: a password value that happens to look like an email
	// must be masked, not hashed.
	s = secretKV.ReplaceAllString(s, "${1}"+Redacted)
	s = bearer.ReplaceAllString(s, "Bearer "+Redacted)
	s = sfSession.ReplaceAllString(s, Redacted)
	s = jwt.ReplaceAllString(s, Redacted)
	s = email.ReplaceAllStringFunc(s, HashEmail)
	return s
}

// redactWriter applies Redact to every complete log line. zerolog emits one
// Write per event, so redacting the final JSON line covers the message, every
// string field and error texts that embed an address, whichever API call
// produced them.
type redactWriter struct {
	w io.Writer
}

// NewRedactingWriter wraps w so that everything written through it passes
// through Redact first. New uses it; it is exported for other sinks (for
// example a writer handed to a third-party library's logger).
func NewRedactingWriter(w io.Writer) io.Writer {
	return redactWriter{w: w}
}

func (r redactWriter) Write(p []byte) (int, error) {
	if !anything.Match(p) {
		return r.w.Write(p)
	}
	if _, err := io.WriteString(r.w, Redact(string(p))); err != nil {
		return 0, err
	}
	// Report the caller's length: the redacted line may be shorter or
	// longer, and zerolog treats a short count as an error.
	return len(p), nil
}

// scrubWriter replaces known secret values (config.SecretsIn) in everything
// written through it: the last line of defence for errors that quote a
// configuration value, such as a URL parser's.
type scrubWriter struct {
	w       io.Writer
	secrets *strings.Replacer
}

// NewScrubbingWriter wraps w so that none of secrets reaches it; each is
// written as [REDACTED]. With no secrets it returns w.
func NewScrubbingWriter(w io.Writer, secrets []string) io.Writer {
	if len(secrets) == 0 {
		return w
	}
	// Longest first, so a password inside a longer user:password is not
	// replaced before the whole.
	s := slices.Clone(secrets)
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(s))
	for _, v := range s {
		pairs = append(pairs, v, Redacted)
	}
	return scrubWriter{w: w, secrets: strings.NewReplacer(pairs...)}
}

func (s scrubWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, s.secrets.Replace(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
