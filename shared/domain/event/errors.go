package event

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Code classifies why a message was rejected. It is what the NATS layer puts
// in the Optout-Error-Code header of a DLQ copy, so dashboards and replay
// tools can group rejections without parsing the human-readable reason.
//
// A Code is also an error, so callers can test for a cause without a type
// assertion: errors.Is(err, event.CodeBadSalesforceID).
type Code string

// The codes Decode, Validate and Encode return. The set only grows: a code, once
// published in a DLQ header, keeps its meaning.
const (
	// CodeInvalidEncoding: the Content-Type header names an encoding we do not read.
	CodeInvalidEncoding Code = "invalid_encoding"
	// CodeTooLarge: the body is over MaxBodySize, or reason is over MaxReasonLen.
	CodeTooLarge Code = "too_large"
	// CodeUndecodable: the body is not a protobuf or protojson OptOutEvent
	// (including a JSON field name that OptOutEvent does not have).
	CodeUndecodable Code = "undecodable"
	// CodeBadSubject: the subject is not optout.v1.events.<tenant>.
	CodeBadSubject Code = "bad_subject"
	// CodeMissingField: a required field is empty.
	CodeMissingField Code = "missing_field"
	// CodeBadEventID: event_id is too long or has characters that cannot
	// travel in the Nats-Msg-Id header.
	CodeBadEventID Code = "bad_event_id"
	// CodeBadTenant: a tenant id is not a single subject token of 1-64 [A-Za-z0-9_-].
	CodeBadTenant Code = "bad_tenant"
	// CodeTenantMismatch: the subject's tenant differs from the body's tenant_id.
	CodeTenantMismatch Code = "tenant_mismatch"
	// CodeBadSalesforceID: wrong length or characters, wrong checksum, or a
	// prefix that is neither a Contact (003) nor a Lead (00Q).
	CodeBadSalesforceID Code = "bad_salesforce_id"
	// CodeTypeMismatch: object_type contradicts the Salesforce id's prefix.
	CodeTypeMismatch Code = "type_mismatch"
	// CodeBadEnum: an enum field holds a number this version does not define.
	CodeBadEnum Code = "bad_enum"
	// CodeBadTimestamp: occurred_at is out of range or too far in the future.
	CodeBadTimestamp Code = "bad_timestamp"
)

// Error makes a Code usable as an errors.Is target.
func (c Code) Error() string { return string(c) }

// ValidationError says which field of a message is wrong and why, in words a
// publisher can act on. It never contains an email address: every value
// quoted in it goes through redaction.
type ValidationError struct {
	// Code classifies the failure (for the Optout-Error-Code header).
	Code Code
	// Field is the proto field path ("person.salesforce_id"), or "subject",
	// "header Content-Type" or "body" for problems outside the event.
	Field string
	// Reason is the human-readable explanation, already including the
	// offending value where that helps.
	Reason string
	// Value is the offending value, redacted and truncated; "" when there is
	// none (a missing field) or it is not safe to show.
	Value string
	// Err is the underlying cause, e.g. sfid.ErrChecksum or a protobuf error;
	// may be nil.
	Err error
}

// Error reads "field: reason", e.g.
// `person.salesforce_id: id "003000000000001" has a wrong checksum ...`.
func (e *ValidationError) Error() string {
	return e.Field + ": " + e.Reason
}

// Unwrap exposes both the Code and the underlying cause, so errors.Is works
// with event.CodeXxx and with e.g. sfid.ErrChecksum.
func (e *ValidationError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Code}
	}
	return []error{e.Code, e.Err}
}

// CodeOf returns the Code of the first ValidationError in err's chain, or ""
// when err is nil or not a validation failure (then the caller should treat it
// as an internal error, not blame the publisher).
func CodeOf(err error) Code {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Code
	}
	return ""
}

// maxShownValue bounds how much of an offending value is echoed: the error
// ends up in a NATS header and in logs, and a 64 KiB garbage event_id helps
// nobody.
const maxShownValue = 80

// maxShownDecodeError bounds the text taken from a protobuf/protojson error.
const maxShownDecodeError = 300

const redacted = "[redacted]"

// emailish matches any run of non-blank, non-quote characters holding an "@"
// or a JSON/Go escape of it. Decoder errors echo raw input (an unknown field
// name, a bad enum token), so anything that could be an address is blanked
// out. Over-redaction is fine; an email in a log line is not.
var emailish = regexp.MustCompile(`(?i)[^\s"'` + "`" + `]*(@|\\u0040|\\x40|\\100)[^\s"'` + "`" + `]*`)

// safeValue prepares a value for ValidationError.Value: redacted if it
// could hold an email, control characters kept out by the later %q, and
// truncated on a rune boundary.
func safeValue(s string) string {
	if emailish.MatchString(s) {
		return redacted
	}
	if len(s) <= maxShownValue {
		return s
	}
	cut := maxShownValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quote renders a value for a Reason: redacted, truncated, Go-quoted so no
// control character (notably CR/LF, fatal in a header) gets through.
func quote(s string) string {
	v := safeValue(s)
	if v == redacted {
		return v
	}
	return strconv.Quote(v)
}

// protoPrefix matches the "proto: " prefix protobuf-go puts on its errors;
// it deliberately alternates between a regular and a non-breaking space, so a
// plain TrimPrefix would work only on some builds.
var protoPrefix = regexp.MustCompile(`proto:[\s\x{00a0}]*`)

// cleanDecodeError turns a protobuf/protojson error into text fit for a
// header: no "proto:" noise, no email, no control characters, bounded length.
func cleanDecodeError(err error) string {
	s := protoPrefix.ReplaceAllString(err.Error(), "")
	s = emailish.ReplaceAllString(s, redacted)
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u00a0' {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxShownDecodeError {
		cut := maxShownDecodeError
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
