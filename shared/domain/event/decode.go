package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Limits from the contract in optout.proto.
const (
	// MaxBodySize is the largest body Decode reads (64 KiB). It is checked
	// before decoding so an oversized message costs no parsing.
	MaxBodySize = 64 << 10
	// MaxEventIDLen is the longest event_id, in characters.
	MaxEventIDLen = 128
	// MaxReasonLen is the longest reason, in bytes (1 KiB).
	MaxReasonLen = 1 << 10
	// MaxFutureSkew is how far occurred_at may be ahead of the receiver's
	// clock: enough for any sane clock skew, small enough that a date typo
	// (2062 for 2026) cannot make an opt-out win every future comparison.
	MaxFutureSkew = 24 * time.Hour
)

// Decode turns one message from an events subject into a validated event.
//
// subject must be optout.v1.events.<tenant> and tenant must equal the body's
// tenant_id. header is a nats.Header or http.Header (both convert
// implicitly); only Content-Type is read, under that exact spelling, in lower
// case, or any other casing. now is the receiver's clock, passed in so tests
// and replays are deterministic.
//
// The returned event is normalised: person.salesforce_id has 18 characters
// and person.object_type is filled from its prefix when it was unspecified.
// Any failure is a *ValidationError (see Code for the classes).
func Decode(subject string, data []byte, header map[string][]string, now time.Time) (*optoutv1.OptOutEvent, error) {
	tenant, err := TenantFromSubject(subject)
	if err != nil {
		return nil, err
	}
	// Size before anything else that looks at the body: a 10 MB message must
	// not be parsed just to be rejected.
	if len(data) > MaxBodySize {
		return nil, &ValidationError{
			Code:   CodeTooLarge,
			Field:  "body",
			Value:  strconv.Itoa(len(data)),
			Reason: fmt.Sprintf("is %d bytes; the limit is %d (64 KiB)", len(data), MaxBodySize),
		}
	}
	isJSON, err := contentType(header)
	if err != nil {
		return nil, err
	}
	ev, err := unmarshal(data, isJSON)
	if err != nil {
		return nil, err
	}
	if err := validate(ev, now, tenant); err != nil {
		return nil, err
	}
	return ev, nil
}

// Validate checks an event against the contract and normalises it in place
// (18-character salesforce_id, object_type from the id's prefix). Publishers
// inside optout-sync (the reconciler's Salesforce-learnt events, optoutctl)
// call it before Encode so they never publish what Decode would reject.
// It does not check the subject; Decode does.
func Validate(ev *optoutv1.OptOutEvent, now time.Time) error {
	return validate(ev, now, "")
}

// Encode serialises ev for publishing: binary protobuf by default, protojson
// when asJSON is true (for humans and the nats CLI). contentType is the value
// for the Content-Type header. Output is deterministic, so identical events
// give identical bytes. It does not validate; call Validate first. An
// encoding over MaxBodySize is refused with CodeTooLarge, because every
// consumer would reject it.
func Encode(ev *optoutv1.OptOutEvent, asJSON bool) (data []byte, contentType string, err error) {
	if ev == nil {
		return nil, "", errors.New("event: Encode called with a nil event")
	}
	if asJSON {
		raw, err := protojson.Marshal(ev)
		if err != nil {
			return nil, "", fmt.Errorf("event: encode %q as JSON: %w", safeValue(ev.GetEventId()), err)
		}
		// protojson deliberately varies its whitespace from build to build;
		// compacting makes the bytes stable for tests and byte comparisons.
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, "", fmt.Errorf("event: compact JSON of %q: %w", safeValue(ev.GetEventId()), err)
		}
		data, contentType = buf.Bytes(), ContentTypeJSON
	} else {
		data, err = proto.MarshalOptions{Deterministic: true}.Marshal(ev)
		if err != nil {
			return nil, "", fmt.Errorf("event: encode %q as protobuf: %w", safeValue(ev.GetEventId()), err)
		}
		contentType = ContentTypeProtobuf
	}
	if len(data) > MaxBodySize {
		return nil, "", &ValidationError{
			Code:   CodeTooLarge,
			Field:  "body",
			Value:  strconv.Itoa(len(data)),
			Reason: fmt.Sprintf("encodes to %d bytes; the limit is %d (64 KiB)", len(data), MaxBodySize),
		}
	}
	return data, contentType, nil
}

// contentType reports whether the body is protojson (true) or protobuf.
// nats.Header keys are case-sensitive and publishers spell the header
// differently (the nats CLI keeps what the user typed), so every casing of
// Content-Type is read; conflicting values are an error rather than a guess.
func contentType(header map[string][]string) (isJSON bool, err error) {
	var chosen string
	for key, values := range header {
		if !strings.EqualFold(key, HeaderContentType) {
			continue
		}
		for _, v := range values {
			v = strings.TrimSpace(v)
			if v == "" {
				continue // "Content-Type:" with no value: same as absent
			}
			if chosen != "" && v != chosen {
				return false, &ValidationError{
					Code:   CodeInvalidEncoding,
					Field:  "header " + HeaderContentType,
					Value:  safeValue(chosen + ", " + v),
					Reason: "has conflicting values " + quote(chosen) + " and " + quote(v) + "; send exactly one",
				}
			}
			chosen = v
		}
	}
	if chosen == "" {
		return false, nil // protobuf is the default encoding
	}
	unsupported := func(cause error) error {
		return &ValidationError{
			Code:   CodeInvalidEncoding,
			Field:  "header " + HeaderContentType,
			Value:  safeValue(chosen),
			Reason: quote(chosen) + " is not supported; send " + ContentTypeProtobuf + " (or no Content-Type) for protobuf, or " + ContentTypeJSON + " for JSON",
			Err:    cause,
		}
	}
	media, params, err := mime.ParseMediaType(chosen)
	// ErrInvalidMediaParameter still yields a usable media type; parameters
	// carry nothing we need, so a sloppy one is not worth a DLQ entry.
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return false, unsupported(err)
	}
	switch media {
	case ContentTypeProtobuf, ContentTypeXProtobuf:
		return false, nil
	case ContentTypeJSON:
		// protojson reads UTF-8 only; a body declared in another charset
		// would be misread, not merely rejected later.
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
			return false, &ValidationError{
				Code:   CodeInvalidEncoding,
				Field:  "header " + HeaderContentType,
				Value:  safeValue(chosen),
				Reason: "charset " + quote(cs) + " is not supported; JSON must be UTF-8",
			}
		}
		return true, nil
	}
	return false, unsupported(nil)
}

// unmarshal decodes the body. The two encodings treat unknown fields
// differently on purpose: protobuf comes from generated code, where an
// unknown field means the publisher has a newer schema, so it is dropped
// (forward compatibility); JSON is often typed by hand, where an unknown
// field is usually a typo ("salesforceID") that would otherwise silently
// lose the id, so it is rejected.
func unmarshal(data []byte, isJSON bool) (*optoutv1.OptOutEvent, error) {
	ev := &optoutv1.OptOutEvent{}
	if isJSON {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, &ValidationError{Code: CodeUndecodable, Field: "body", Reason: "is empty; want a JSON OptOutEvent object"}
		}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(data, ev); err != nil {
			msg := cleanDecodeError(err)
			reason := "not a valid JSON OptOutEvent: " + msg
			if strings.Contains(msg, "unknown field") {
				reason += "; field names are those of optout.proto, in lowerCamelCase or snake_case"
			}
			return nil, &ValidationError{Code: CodeUndecodable, Field: "body", Reason: reason, Err: err}
		}
		return ev, nil
	}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, ev); err != nil {
		reason := "not a valid protobuf OptOutEvent: " + cleanDecodeError(err)
		if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
			reason += "; it looks like JSON: send it with header Content-Type: application/json"
		}
		return nil, &ValidationError{Code: CodeUndecodable, Field: "body", Reason: reason, Err: err}
	}
	return ev, nil
}

// validate checks ev in field order and returns the first problem, so the
// publisher fixes one thing at a time in the order of the .proto.
// subjectTenant is "" when there is no subject to compare with.
func validate(ev *optoutv1.OptOutEvent, now time.Time, subjectTenant string) error {
	if ev == nil {
		return &ValidationError{Code: CodeMissingField, Field: "event", Reason: "is nil"}
	}
	if err := checkEventID(ev.GetEventId()); err != nil {
		return err
	}
	if err := checkTenant(ev.GetTenantId(), subjectTenant); err != nil {
		return err
	}
	if err := checkPerson(ev.GetPerson()); err != nil {
		return err
	}
	switch a := ev.GetAction(); {
	case a == optoutv1.Action_ACTION_UNSPECIFIED:
		return &ValidationError{
			Code:   CodeMissingField,
			Field:  "action",
			Reason: "is missing (ACTION_UNSPECIFIED); want UNSUBSCRIBE or RESUBSCRIBE",
		}
	case !knownEnum(optoutv1.Action_name, int32(a)):
		return badEnum("action", int32(a), "Action", "UNSUBSCRIBE, RESUBSCRIBE")
	}
	if err := checkOccurredAt(ev, now); err != nil {
		return err
	}
	// source is audit-only, so an unknown value (a publisher on a newer
	// contract) is kept rather than sending an opt-out to the DLQ.
	if n := len(ev.GetReason()); n > MaxReasonLen {
		return &ValidationError{
			Code:   CodeTooLarge,
			Field:  "reason",
			Value:  strconv.Itoa(n),
			Reason: fmt.Sprintf("is %d bytes; at most %d (1 KiB) is accepted", n, MaxReasonLen),
		}
	}
	return nil
}

func checkEventID(id string) error {
	if id == "" {
		return &ValidationError{
			Code:   CodeMissingField,
			Field:  "event_id",
			Reason: "is missing; every event needs a unique id of 1-128 printable characters (also sent as Nats-Msg-Id)",
		}
	}
	bad := func(why string) error {
		return &ValidationError{Code: CodeBadEventID, Field: "event_id", Value: safeValue(id), Reason: quote(id) + " " + why}
	}
	if !utf8.ValidString(id) {
		return bad("is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(id); n > MaxEventIDLen {
		return bad(fmt.Sprintf("has %d characters; at most %d are accepted", n, MaxEventIDLen))
	}
	for i, r := range id {
		// The id travels in the Nats-Msg-Id header, where a control
		// character breaks the protocol; IsPrint also excludes exotic
		// spaces that would look identical to an ordinary one in logs.
		if !unicode.IsPrint(r) {
			return bad(fmt.Sprintf("has a non-printable character %U at byte %d", r, i))
		}
	}
	// NATS trims header values, so a padded id would dedupe as a different
	// id than the one in the body.
	if id[0] == ' ' || id[len(id)-1] == ' ' {
		return bad("starts or ends with a space, which NATS strips from the Nats-Msg-Id header")
	}
	return nil
}

func checkTenant(tenant, subjectTenant string) error {
	if tenant == "" {
		reason := "is missing; it must equal the subject's last token"
		if subjectTenant != "" {
			reason += " " + quote(subjectTenant)
		}
		return &ValidationError{Code: CodeMissingField, Field: "tenant_id", Reason: reason}
	}
	if !ValidTenant(tenant) {
		return &ValidationError{Code: CodeBadTenant, Field: "tenant_id", Value: safeValue(tenant), Reason: quote(tenant) + " " + tenantRule}
	}
	if subjectTenant != "" && tenant != subjectTenant {
		return &ValidationError{
			Code:   CodeTenantMismatch,
			Field:  "tenant_id",
			Value:  safeValue(tenant),
			Reason: quote(tenant) + " does not match the subject's tenant " + quote(subjectTenant) + "; publish on " + Subject(tenant),
		}
	}
	return nil
}

// checkPerson validates and normalises the person in place.
func checkPerson(p *optoutv1.Person) error {
	if p == nil {
		return &ValidationError{
			Code:   CodeMissingField,
			Field:  "person",
			Reason: "is missing; give at least one of sales_connect_id and salesforce_id",
		}
	}
	if p.GetSalesConnectId() == "" && p.GetSalesforceId() == "" {
		return &ValidationError{
			Code:   CodeMissingField,
			Field:  "person",
			Reason: "has neither sales_connect_id nor salesforce_id; at least one is required",
		}
	}
	if ot := p.GetObjectType(); !knownEnum(optoutv1.ObjectType_name, int32(ot)) {
		return badEnum("person.object_type", int32(ot), "ObjectType", "CONTACT, LEAD")
	}
	raw := p.GetSalesforceId()
	if raw == "" {
		// Parked until a later event carries the id; object_type alone is
		// harmless and kept.
		return nil
	}
	id, err := normalizeID(raw)
	if err != nil {
		return err
	}
	var want optoutv1.ObjectType
	switch sfid.ObjectType(id) {
	case sfid.Contact:
		want = optoutv1.ObjectType_CONTACT
	case sfid.Lead:
		want = optoutv1.ObjectType_LEAD
	default:
		return &ValidationError{
			Code:   CodeBadSalesforceID,
			Field:  "person.salesforce_id",
			Value:  safeValue(raw),
			Reason: fmt.Sprintf("id %s has prefix %s; want %s (Contact) or %s (Lead)", quote(raw), quote(id[:3]), sfid.PrefixContact, sfid.PrefixLead),
		}
	}
	switch got := p.GetObjectType(); got {
	case optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED:
		p.ObjectType = want
	case want:
	default:
		return &ValidationError{
			Code:   CodeTypeMismatch,
			Field:  "person.object_type",
			Value:  got.String(),
			Reason: fmt.Sprintf("%s contradicts salesforce_id %s, whose prefix %s is a %s", got, quote(raw), id[:3], sfid.ObjectType(id)),
		}
	}
	p.SalesforceId = id
	return nil
}

// normalizeID wraps sfid.Normalize with publisher-facing wording; the sfid
// sentinel stays reachable through errors.Is.
func normalizeID(raw string) (string, error) {
	id, err := sfid.Normalize(raw)
	if err == nil {
		return id, nil
	}
	ve := &ValidationError{Code: CodeBadSalesforceID, Field: "person.salesforce_id", Value: safeValue(raw), Err: err}
	switch {
	case errors.Is(err, sfid.ErrLength):
		ve.Reason = fmt.Sprintf("id %s has %d characters; want 15 or 18", quote(raw), len(raw))
	case errors.Is(err, sfid.ErrCharacter):
		ve.Reason = fmt.Sprintf("id %s has a character other than A-Z, a-z and 0-9", quote(raw))
	case errors.Is(err, sfid.ErrChecksum):
		// Recompute from the first 15 rather than parse sfid's message. A bad
		// checksum usually means the case of the id was changed in transit
		// (e.g. lower-cased), so the hint matters: "fixing" the suffix would
		// point at a different record.
		full, _ := sfid.Normalize(raw[:15])
		ve.Reason = fmt.Sprintf("18-character id %s has a wrong checksum: its first 15 characters give suffix %q, not %q (was the id's case changed?)",
			quote(raw), full[15:], raw[15:])
	default:
		ve.Reason = fmt.Sprintf("id %s is malformed: %v", quote(raw), err)
	}
	return "", ve
}

func checkOccurredAt(ev *optoutv1.OptOutEvent, now time.Time) error {
	ts := ev.GetOccurredAt()
	if ts == nil {
		return &ValidationError{
			Code:   CodeMissingField,
			Field:  "occurred_at",
			Reason: "is missing; set it to when the person acted (an RFC 3339 string in JSON)",
		}
	}
	if err := ts.CheckValid(); err != nil {
		return &ValidationError{
			Code:  CodeBadTimestamp,
			Field: "occurred_at",
			// Not the protobuf message: it embeds prototext, whose spacing
			// varies between builds, and the header text must be stable.
			Value:  fmt.Sprintf("seconds:%d nanos:%d", ts.GetSeconds(), ts.GetNanos()),
			Reason: fmt.Sprintf("seconds %d, nanos %d is not a valid timestamp; want years 0001-9999 and nanos 0-999999999", ts.GetSeconds(), ts.GetNanos()),
			Err:    err,
		}
	}
	t := ts.AsTime()
	if limit := now.Add(MaxFutureSkew); t.After(limit) {
		shown := t.UTC().Format(time.RFC3339Nano)
		return &ValidationError{
			Code:  CodeBadTimestamp,
			Field: "occurred_at",
			Value: shown,
			Reason: fmt.Sprintf("%s is %s ahead of the receiver's clock (%s); at most 24h in the future is accepted",
				shown, ahead(t, now), now.UTC().Format(time.RFC3339)),
		}
	}
	return nil
}

// ahead renders how far t is past now. time.Duration saturates at ~292
// years, so a year-9999 typo is shown in days instead of a bogus duration.
func ahead(t, now time.Time) string {
	if d := t.Sub(now); d < 1000*time.Hour {
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%d days", (t.Unix()-now.Unix())/86400)
}

func knownEnum(names map[int32]string, n int32) bool {
	_, ok := names[n]
	return ok
}

func badEnum(field string, n int32, typ, want string) error {
	return &ValidationError{
		Code:   CodeBadEnum,
		Field:  field,
		Value:  strconv.Itoa(int(n)),
		Reason: fmt.Sprintf("value %d is not a known %s; want one of %s", n, typ, want),
	}
}
