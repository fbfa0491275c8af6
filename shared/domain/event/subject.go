// Package event is the one place that turns a NATS message into a validated
// optout.v1.OptOutEvent, and an event back into bytes, so the pusher, the
// reconciler, optoutctl and the tests all agree on the wire contract in
// proto/optout/v1/optout.proto.
//
// Decode rejects with a *ValidationError whose text a publisher can act on
// and whose Code the NATS layer copies into the Optout-Error-Code header of
// the DLQ copy. Nothing here logs, and no error ever quotes an email.
package event

import "strings"

// Subject prefixes. Each is followed by exactly one tenant token.
const (
	// EventsPrefix is where publishers send OptOutEvents; the stream
	// OPTOUT_EVENTS captures EventsPrefix + ">".
	EventsPrefix = "optout.v1.events."
	// DLQPrefix receives copies of rejected messages, with the reason in
	// HeaderError and HeaderErrorCode.
	DLQPrefix = "optout.v1.dlq."
	// AppliedPrefix announces events whose effect is durable.
	AppliedPrefix = "optout.v1.applied."
	// AuditPrefix carries the audit trail.
	AuditPrefix = "optout.v1.audit."
	// ControlPrefix is for operator commands (pause, resume, run now). No
	// stream may capture it: a command replayed after a restart would act twice.
	ControlPrefix = "optout.v1.control."
)

// Header names. nats.Header is case-sensitive, so these are the exact
// spellings we write; Decode also reads a lower-case Content-Type.
const (
	// HeaderMsgID carries the event_id so JetStream drops duplicates.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderContentType selects protobuf (absent or ContentTypeProtobuf) or
	// protojson (ContentTypeJSON).
	HeaderContentType = "Content-Type"
	// HeaderError holds ValidationError.Error() on a DLQ copy.
	HeaderError = "Optout-Error"
	// HeaderErrorCode holds the Code on a DLQ copy.
	HeaderErrorCode = "Optout-Error-Code"
)

// Content types Encode produces. Decode also accepts ContentTypeXProtobuf
// and parameters such as "; charset=utf-8".
const (
	ContentTypeProtobuf  = "application/protobuf"
	ContentTypeXProtobuf = "application/x-protobuf"
	ContentTypeJSON      = "application/json"
)

// MaxTenantLen is the longest tenant id; it keeps subjects, KV keys and
// metric labels bounded.
const MaxTenantLen = 64

// Subject returns the subject events of tenant are published on. It does not
// validate tenant; callers holding untrusted input check ValidTenant first.
func Subject(tenant string) string { return EventsPrefix + tenant }

// ValidTenant reports whether s can be a tenant id: one NATS subject token
// of 1-64 characters from [A-Za-z0-9_-]. Dots would split the token and
// '*' / '>' are wildcards, which is why the set is this narrow.
func ValidTenant(s string) bool {
	if len(s) == 0 || len(s) > MaxTenantLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// TenantFromSubject returns the tenant of an events subject
// (optout.v1.events.<tenant>). The NATS layer also uses it to route a DLQ
// copy; on error it should fall back to a fixed "unknown" tenant token.
func TenantFromSubject(subject string) (string, error) {
	tenant, ok := strings.CutPrefix(subject, EventsPrefix)
	if !ok || tenant == "" || strings.Contains(tenant, ".") {
		return "", &ValidationError{
			Code:   CodeBadSubject,
			Field:  "subject",
			Value:  safeValue(subject),
			Reason: quote(subject) + " is not of the form " + EventsPrefix + "<tenant_id>",
		}
	}
	if !ValidTenant(tenant) {
		return "", &ValidationError{
			Code:   CodeBadTenant,
			Field:  "subject",
			Value:  safeValue(tenant),
			Reason: "tenant token " + quote(tenant) + " " + tenantRule,
		}
	}
	return tenant, nil
}

const tenantRule = "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
