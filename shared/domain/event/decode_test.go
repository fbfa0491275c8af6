package event

import (
	"errors"
	"strings"
	"testing"
	"time"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// now is the receiver's clock in every test: five minutes after the README
// example happened.
var now = time.Date(2026, 11, 28, 12, 5, 0, 0, time.UTC)

// readmeJSON is the example in optout.proto and the README, exactly as a user
// types it for `nats pub`. If this test breaks, the docs are wrong.
const readmeJSON = `{"eventId":"evt-0001","tenantId":"acme","person":{"salesConnectId":"sc-42","salesforceId":"003000000000001AAA","objectType":"CONTACT"},"action":"UNSUBSCRIBE","occurredAt":"2026-11-28T12:00:00Z","source":"EMAIL_LINK","reason":"clicked unsubscribe"}`

const acme = "optout.v1.events.acme"

var jsonHeader = map[string][]string{"Content-Type": {"application/json"}}

func validEvent() *optoutv1.OptOutEvent {
	return &optoutv1.OptOutEvent{
		EventId:  "evt-0001",
		TenantId: "acme",
		Person: &optoutv1.Person{
			SalesConnectId: "sc-42",
			SalesforceId:   "003000000000001AAA",
			ObjectType:     optoutv1.ObjectType_CONTACT,
			Email:          "jane.doe@example.com",
		},
		Action:     optoutv1.Action_UNSUBSCRIBE,
		OccurredAt: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)),
		Source:     optoutv1.Source_EMAIL_LINK,
		Reason:     "clicked unsubscribe",
	}
}

// pb returns the protobuf encoding of a valid event after mut.
func pb(t testing.TB, mut func(*optoutv1.OptOutEvent)) []byte {
	t.Helper()
	ev := validEvent()
	if mut != nil {
		mut(ev)
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecodeReadmeExample(t *testing.T) {
	ev, err := Decode(acme, []byte(readmeJSON), jsonHeader, now)
	if err != nil {
		t.Fatalf("README example rejected: %v", err)
	}
	want := validEvent()
	want.Person.Email = ""
	if !proto.Equal(ev, want) {
		t.Errorf("decoded %v\nwant %v", ev, want)
	}
	// The example must survive our own encoder byte for byte, so the docs
	// can be regenerated from Encode.
	data, ct, err := Encode(ev, true)
	if err != nil || ct != ContentTypeJSON || string(data) != readmeJSON {
		t.Errorf("Encode(README event) = %s, %q, %v; want the README text", data, ct, err)
	}
}

func TestDecodeAccepts(t *testing.T) {
	fifteen := func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQg" }
	lead := func(e *optoutv1.OptOutEvent) {
		e.Person.SalesforceId = "00QRO0000035WQg2AM"
		e.Person.ObjectType = optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
	}
	tests := []struct {
		name    string
		header  map[string][]string
		data    []byte
		wantID  string
		wantObj optoutv1.ObjectType
	}{
		{"protobuf without Content-Type", nil, pb(t, nil), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"empty Content-Type means protobuf", map[string][]string{"Content-Type": {" "}}, pb(t, nil), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"application/protobuf", map[string][]string{"Content-Type": {"application/protobuf"}}, pb(t, nil), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"application/x-protobuf", map[string][]string{"Content-Type": {"application/x-protobuf"}}, pb(t, nil), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"JSON with charset", map[string][]string{"Content-Type": {"application/json; charset=utf-8"}}, []byte(readmeJSON), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"JSON lower-case header", map[string][]string{"content-type": {"application/json"}}, []byte(readmeJSON), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"JSON upper-case media type", map[string][]string{"CONTENT-TYPE": {"Application/JSON"}}, []byte(readmeJSON), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"JSON snake_case names", jsonHeader, []byte(`{"event_id":"e1","tenant_id":"acme","person":{"salesforce_id":"003RO0000035WQg"},"action":"UNSUBSCRIBE","occurred_at":"2026-11-28T12:00:00Z"}`), "003RO0000035WQgYAM", optoutv1.ObjectType_CONTACT},
		{"15-character id normalised", nil, pb(t, fifteen), "003RO0000035WQgYAM", optoutv1.ObjectType_CONTACT},
		{"lower-case checksum normalised", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQgyam" }), "003RO0000035WQgYAM", optoutv1.ObjectType_CONTACT},
		{"object_type filled from 00Q", nil, pb(t, lead), "00QRO0000035WQg2AM", optoutv1.ObjectType_LEAD},
		{"no salesforce id is parked, not rejected", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "" }), "", optoutv1.ObjectType_CONTACT},
		{"occurred_at exactly 24h ahead", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.OccurredAt = timestamppb.New(now.Add(24 * time.Hour)) }), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"unknown source kept", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Source = 42 }), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
		{"unknown protobuf field dropped", nil, append(pb(t, nil), 0xf8, 0x01, 0x01), "003000000000001AAA", optoutv1.ObjectType_CONTACT}, // field 31, varint 1
		{"body of exactly 64 KiB", nil, exactly64KiB(t), "003000000000001AAA", optoutv1.ObjectType_CONTACT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(acme, tt.data, tt.header, now)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := ev.GetPerson().GetSalesforceId(); got != tt.wantID {
				t.Errorf("salesforce_id = %q; want %q", got, tt.wantID)
			}
			if got := ev.GetPerson().GetObjectType(); got != tt.wantObj {
				t.Errorf("object_type = %v; want %v", got, tt.wantObj)
			}
			if len(ev.ProtoReflect().GetUnknown()) != 0 {
				t.Errorf("unknown fields kept: %x", ev.ProtoReflect().GetUnknown())
			}
		})
	}
}

// exactly64KiB pads a valid event's email until the body is MaxBodySize bytes.
// The length prefix of the padding grows with it, hence the loop.
func exactly64KiB(t testing.TB) []byte {
	pad := MaxBodySize - len(pb(t, nil))
	for {
		data := pb(t, func(e *optoutv1.OptOutEvent) { e.Person.Email += strings.Repeat("x", pad) })
		switch {
		case len(data) == MaxBodySize:
			return data
		case len(data) > MaxBodySize:
			pad--
		default:
			t.Fatalf("cannot pad to exactly %d bytes", MaxBodySize)
		}
	}
}

// TestDecodeRejects pins the exact text a publisher reads in the
// Optout-Error header of the DLQ copy, one case per check.
func TestDecodeRejects(t *testing.T) {
	for _, tt := range rejectCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.subject, tt.data, tt.header, now)
			if err == nil {
				t.Fatalf("Decode accepted %v", ev)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("message\n got: %s\nwant: %s", got, tt.want)
			}
			if !errors.Is(err, tt.code) || CodeOf(err) != tt.code {
				t.Errorf("code = %q; want %q", CodeOf(err), tt.code)
			}
			if strings.Contains(err.Error(), "@") || strings.Contains(ve.Value, "@") {
				t.Errorf("error quotes an email: %q / Value %q", err.Error(), ve.Value)
			}
		})
	}
}

type rejectCase struct {
	name    string
	subject string // "" means optout.v1.events.acme
	header  map[string][]string
	data    []byte
	code    Code
	want    string
}

// rejectCases is shared with FuzzDecode, which uses each as a seed.
func rejectCases(tb testing.TB) []rejectCase {
	t := tb
	j := func(s string) []byte { return []byte(s) }
	tests := []rejectCase{
		// Subject.
		{"subject missing tenant", "optout.v1.events", nil, pb(t, nil), CodeBadSubject,
			`subject: "optout.v1.events" is not of the form optout.v1.events.<tenant_id>`},
		{"subject with extra token", "optout.v1.events.acme.eu", nil, pb(t, nil), CodeBadSubject,
			`subject: "optout.v1.events.acme.eu" is not of the form optout.v1.events.<tenant_id>`},
		{"subject of another family", "optout.v1.dlq.acme", nil, pb(t, nil), CodeBadSubject,
			`subject: "optout.v1.dlq.acme" is not of the form optout.v1.events.<tenant_id>`},
		{"subject tenant with bad character", "optout.v1.events.ac!me", nil, pb(t, nil), CodeBadTenant,
			`subject: tenant token "ac!me" must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'`},

		// Size, before decoding: this body is not even valid protobuf.
		{"body over 64 KiB", "", nil, make([]byte, MaxBodySize+1), CodeTooLarge,
			`body: is 65537 bytes; the limit is 65536 (64 KiB)`},

		// Encoding.
		{"unknown Content-Type", "", map[string][]string{"Content-Type": {"text/plain"}}, pb(t, nil), CodeInvalidEncoding,
			`header Content-Type: "text/plain" is not supported; send application/protobuf (or no Content-Type) for protobuf, or application/json for JSON`},
		{"malformed Content-Type", "", map[string][]string{"Content-Type": {"json"}}, pb(t, nil), CodeInvalidEncoding,
			`header Content-Type: "json" is not supported; send application/protobuf (or no Content-Type) for protobuf, or application/json for JSON`},
		{"JSON in another charset", "", map[string][]string{"Content-Type": {"application/json; charset=latin1"}}, j(readmeJSON), CodeInvalidEncoding,
			`header Content-Type: charset "latin1" is not supported; JSON must be UTF-8`},
		{"conflicting Content-Type", "", map[string][]string{"Content-Type": {"application/json", "application/protobuf"}}, j(readmeJSON), CodeInvalidEncoding,
			`header Content-Type: has conflicting values "application/json" and "application/protobuf"; send exactly one`},

		// Undecodable.
		{"garbage protobuf", "", nil, []byte{0xff, 0xff, 0xff}, CodeUndecodable,
			`body: not a valid protobuf OptOutEvent: cannot parse invalid wire-format data`},
		{"JSON without Content-Type", "", nil, j(readmeJSON), CodeUndecodable,
			`body: not a valid protobuf OptOutEvent: cannot parse invalid wire-format data; it looks like JSON: send it with header Content-Type: application/json`},
		{"JSON field name typo", "", jsonHeader, j(`{"eventId":"e1","tenantId":"acme","person":{"salesforceID":"003000000000001AAA"}}`), CodeUndecodable,
			`body: not a valid JSON OptOutEvent: (line 1:45): unknown field "salesforceID"; field names are those of optout.proto, in lowerCamelCase or snake_case`},
		{"empty JSON body", "", jsonHeader, nil, CodeUndecodable,
			`body: is empty; want a JSON OptOutEvent object`},
		{"JSON syntax error", "", jsonHeader, j(`{"eventId":"e1",}`), CodeUndecodable,
			`body: not a valid JSON OptOutEvent: syntax error (line 1:17): unexpected token }`},
		{"JSON unknown enum name", "", jsonHeader, j(`{"action":"OPT_OUT"}`), CodeUndecodable,
			`body: not a valid JSON OptOutEvent: (line 1:11): invalid value for enum field action: "OPT_OUT"`},
		{"JSON email in a bad enum is redacted", "", jsonHeader, j(`{"person":{"objectType":"jane.doe@example.com"}}`), CodeUndecodable,
			`body: not a valid JSON OptOutEvent: (line 1:25): invalid value for enum field objectType: "[redacted]"`},
		{"JSON bad timestamp", "", jsonHeader, j(`{"occurredAt":"28/11/2026"}`), CodeUndecodable,
			`body: not a valid JSON OptOutEvent: (line 1:15): invalid google.protobuf.Timestamp value "28/11/2026"`},

		// Required fields.
		{"missing event_id", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.EventId = "" }), CodeMissingField,
			`event_id: is missing; every event needs a unique id of 1-128 printable characters (also sent as Nats-Msg-Id)`},
		{"missing tenant_id", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.TenantId = "" }), CodeMissingField,
			`tenant_id: is missing; it must equal the subject's last token "acme"`},
		{"missing person", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person = nil }), CodeMissingField,
			`person: is missing; give at least one of sales_connect_id and salesforce_id`},
		{"person without ids", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesConnectId, e.Person.SalesforceId = "", "" }), CodeMissingField,
			`person: has neither sales_connect_id nor salesforce_id; at least one is required`},
		{"action unspecified", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Action = optoutv1.Action_ACTION_UNSPECIFIED }), CodeMissingField,
			`action: is missing (ACTION_UNSPECIFIED); want UNSUBSCRIBE or RESUBSCRIBE`},
		{"missing occurred_at", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.OccurredAt = nil }), CodeMissingField,
			`occurred_at: is missing; set it to when the person acted (an RFC 3339 string in JSON)`},
		{"empty protobuf body", "", nil, nil, CodeMissingField,
			`event_id: is missing; every event needs a unique id of 1-128 printable characters (also sent as Nats-Msg-Id)`},

		// event_id.
		{"event_id too long", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.EventId = strings.Repeat("e", 129) }), CodeBadEventID,
			`event_id: "` + strings.Repeat("e", 80) + `…" has 129 characters; at most 128 are accepted`},
		{"event_id with newline", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.EventId = "evt-1\r\nX-Evil: 1" }), CodeBadEventID,
			`event_id: "evt-1\r\nX-Evil: 1" has a non-printable character U+000D at byte 5`},
		{"event_id padded", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.EventId = " evt-1" }), CodeBadEventID,
			`event_id: " evt-1" starts or ends with a space, which NATS strips from the Nats-Msg-Id header`},
		{"event_id that is an email", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.EventId = "jane\x00@example.com" }), CodeBadEventID,
			`event_id: [redacted] has a non-printable character U+0000 at byte 4`},

		// Tenant.
		{"tenant_id not a token", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.TenantId = "ac.me" }), CodeBadTenant,
			`tenant_id: "ac.me" must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'`},
		{"tenant_id too long", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.TenantId = strings.Repeat("a", 65) }), CodeBadTenant,
			`tenant_id: "` + strings.Repeat("a", 65) + `" must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'`},
		{"tenant mismatch", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.TenantId = "globex" }), CodeTenantMismatch,
			`tenant_id: "globex" does not match the subject's tenant "acme"; publish on optout.v1.events.globex`},

		// Salesforce id.
		{"salesforce id too short", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQ" }), CodeBadSalesforceID,
			`person.salesforce_id: id "003RO0000035WQ" has 14 characters; want 15 or 18`},
		{"salesforce id with a dash", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQg-AM" }), CodeBadSalesforceID,
			`person.salesforce_id: id "003RO0000035WQg-AM" has a character other than A-Z, a-z and 0-9`},
		{"salesforce id wrong checksum", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQgAAA" }), CodeBadSalesforceID,
			`person.salesforce_id: 18-character id "003RO0000035WQgAAA" has a wrong checksum: its first 15 characters give suffix "YAM", not "AAA" (was the id's case changed?)`},
		{"salesforce id lower-cased in transit", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003ro0000035wqgyam" }), CodeBadSalesforceID,
			`person.salesforce_id: 18-character id "003ro0000035wqgyam" has a wrong checksum: its first 15 characters give suffix "AAA", not "yam" (was the id's case changed?)`},
		{"salesforce id of an Account", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "001D000000IRFma" }), CodeBadSalesforceID,
			`person.salesforce_id: id "001D000000IRFma" has prefix "001"; want 003 (Contact) or 00Q (Lead)`},
		{"email in salesforce_id is redacted", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "jane@example.com" }), CodeBadSalesforceID,
			`person.salesforce_id: id [redacted] has 16 characters; want 15 or 18`},
		{"object_type contradicts prefix", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.ObjectType = optoutv1.ObjectType_LEAD }), CodeTypeMismatch,
			`person.object_type: LEAD contradicts salesforce_id "003000000000001AAA", whose prefix 003 is a Contact`},
		{"object_type unknown number", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.ObjectType = 7 }), CodeBadEnum,
			`person.object_type: value 7 is not a known ObjectType; want one of CONTACT, LEAD`},
		{"action unknown number", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Action = 9 }), CodeBadEnum,
			`action: value 9 is not a known Action; want one of UNSUBSCRIBE, RESUBSCRIBE`},

		// Time.
		{"occurred_at too far ahead", "", nil, pb(t, func(e *optoutv1.OptOutEvent) {
			e.OccurredAt = timestamppb.New(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
		}), CodeBadTimestamp,
			`occurred_at: 2026-11-30T12:00:00Z is 47h55m0s ahead of the receiver's clock (2026-11-28T12:05:00Z); at most 24h in the future is accepted`},
		{"occurred_at with nanos out of range", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.OccurredAt.Nanos = 1e9 }), CodeBadTimestamp,
			`occurred_at: seconds 1795867200, nanos 1000000000 is not a valid timestamp; want years 0001-9999 and nanos 0-999999999`},

		{"occurred_at in year 9999", "", jsonHeader, j(`{"eventId":"e1","tenantId":"acme","person":{"salesConnectId":"sc-42"},"action":"UNSUBSCRIBE","occurredAt":"9999-12-31T00:00:00Z"}`), CodeBadTimestamp,
			`occurred_at: 9999-12-31T00:00:00Z is 2912110 days ahead of the receiver's clock (2026-11-28T12:05:00Z); at most 24h in the future is accepted`},

		// Reason.
		{"reason over 1 KiB", "", nil, pb(t, func(e *optoutv1.OptOutEvent) { e.Reason = strings.Repeat("r", 1025) }), CodeTooLarge,
			`reason: is 1025 bytes; at most 1024 (1 KiB) is accepted`},
	}
	for i := range tests {
		if tests[i].subject == "" {
			tests[i].subject = acme
		}
	}
	return tests
}

func TestErrorsIsReachesSfidCause(t *testing.T) {
	_, err := Decode(acme, pb(t, func(e *optoutv1.OptOutEvent) { e.Person.SalesforceId = "003RO0000035WQgAAA" }), nil, now)
	if !errors.Is(err, sfid.ErrChecksum) || !errors.Is(err, CodeBadSalesforceID) {
		t.Errorf("errors.Is(%v, sfid.ErrChecksum / CodeBadSalesforceID) = false", err)
	}
	if errors.Is(err, CodeTypeMismatch) {
		t.Errorf("errors.Is matched an unrelated code")
	}
	if CodeOf(errors.New("x")) != "" || CodeOf(nil) != "" {
		t.Errorf("CodeOf of a non-validation error must be empty")
	}
}

func TestValidateNormalisesInPlace(t *testing.T) {
	ev := validEvent()
	ev.Person.SalesforceId = "00QRO0000035WQg"
	ev.Person.ObjectType = optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
	if err := Validate(ev, now); err != nil {
		t.Fatal(err)
	}
	if ev.Person.SalesforceId != "00QRO0000035WQg2AM" || ev.Person.ObjectType != optoutv1.ObjectType_LEAD {
		t.Errorf("got %q %v", ev.Person.SalesforceId, ev.Person.ObjectType)
	}
	if err := Validate(nil, now); CodeOf(err) != CodeMissingField {
		t.Errorf("Validate(nil) = %v", err)
	}
}

func TestEncode(t *testing.T) {
	ev := validEvent()
	for _, asJSON := range []bool{false, true} {
		data, ct, err := Encode(ev, asJSON)
		if err != nil {
			t.Fatal(err)
		}
		again, _, _ := Encode(ev, asJSON)
		if string(again) != string(data) {
			t.Errorf("Encode(json=%v) is not deterministic", asJSON)
		}
		got, err := Decode(acme, data, map[string][]string{HeaderContentType: {ct}}, now)
		if err != nil {
			t.Fatalf("Decode(Encode(json=%v)): %v", asJSON, err)
		}
		if !proto.Equal(got, ev) {
			t.Errorf("round trip json=%v: got %v want %v", asJSON, got, ev)
		}
		if wantCT := map[bool]string{false: ContentTypeProtobuf, true: ContentTypeJSON}[asJSON]; ct != wantCT {
			t.Errorf("content type %q; want %q", ct, wantCT)
		}
	}
	big := validEvent()
	big.Person.Email = strings.Repeat("x", MaxBodySize)
	if _, _, err := Encode(big, false); CodeOf(err) != CodeTooLarge {
		t.Errorf("Encode(oversized) = %v; want too_large", err)
	}
	if _, _, err := Encode(nil, false); err == nil {
		t.Errorf("Encode(nil) succeeded")
	}
}

func TestSubject(t *testing.T) {
	if got := Subject("acme"); got != "optout.v1.events.acme" {
		t.Errorf("Subject = %q", got)
	}
	for _, p := range []string{EventsPrefix, DLQPrefix, AppliedPrefix, AuditPrefix, ControlPrefix} {
		if !strings.HasPrefix(p, "optout.v1.") || !strings.HasSuffix(p, ".") {
			t.Errorf("prefix %q", p)
		}
	}
	if got, err := TenantFromSubject(Subject("Acme_EU-1")); err != nil || got != "Acme_EU-1" {
		t.Errorf("TenantFromSubject = %q, %v", got, err)
	}
	for _, s := range []string{"", "optout.v1.events.", "optout.v1.events.*", "optout.v1.events.>", "x.optout.v1.events.acme"} {
		if _, err := TenantFromSubject(s); err == nil {
			t.Errorf("TenantFromSubject(%q) accepted", s)
		}
	}
	if !ValidTenant(strings.Repeat("a", 64)) || ValidTenant(strings.Repeat("a", 65)) || ValidTenant("") {
		t.Errorf("ValidTenant length bounds")
	}
}
