package event

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/shared/domain/sfid"
	"google.golang.org/protobuf/proto"
)

var knownCodes = map[Code]bool{
	CodeInvalidEncoding: true, CodeTooLarge: true, CodeUndecodable: true,
	CodeBadSubject: true, CodeMissingField: true, CodeBadEventID: true,
	CodeBadTenant: true, CodeTenantMismatch: true, CodeBadSalesforceID: true,
	CodeTypeMismatch: true, CodeBadEnum: true, CodeBadTimestamp: true,
}

// FuzzDecode feeds arbitrary subjects, bodies and Content-Types to Decode.
// Whatever comes in, Decode must not panic; a rejection must be a
// header-safe, email-free *ValidationError with a known code; an acceptance
// must satisfy every invariant consumers rely on and survive a re-encode in
// both encodings unchanged.
//
// Run: go test ./event/ -run '^$' -fuzz FuzzDecode -fuzztime=60s
func FuzzDecode(f *testing.F) {
	f.Add(acme, []byte(readmeJSON), ContentTypeJSON)
	f.Add(acme, []byte(readmeJSON), "application/json; charset=utf-8")
	f.Add(acme, pb(f, nil), "")
	f.Add(acme, pb(f, nil), ContentTypeXProtobuf)
	f.Add(acme, pb(f, func(e *optoutv1.OptOutEvent) {
		e.Person.SalesforceId = "00QRO0000035WQg"
		e.Person.ObjectType = optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED
	}), ContentTypeProtobuf)
	for _, c := range rejectCases(f) {
		ct := ""
		for k, v := range c.header {
			if strings.EqualFold(k, HeaderContentType) && len(v) > 0 {
				ct = v[0]
			}
		}
		f.Add(c.subject, c.data, ct)
	}

	f.Fuzz(func(t *testing.T, subject string, data []byte, ct string) {
		var header map[string][]string
		if ct != "" {
			header = map[string][]string{HeaderContentType: {ct}}
		}
		ev, err := Decode(subject, data, header, now)
		if err != nil {
			checkRejection(t, err)
			return
		}
		checkInvariants(t, subject, ev)
		for _, asJSON := range []bool{false, true} {
			again, ct2, err := Encode(ev, asJSON)
			if err != nil {
				// JSON escapes control characters in free text (up to 6x),
				// so a body near the limit may not fit as JSON. Anything
				// else is a bug.
				if asJSON && CodeOf(err) == CodeTooLarge {
					continue
				}
				t.Fatalf("Encode(json=%v) of an accepted event: %v", asJSON, err)
			}
			ev2, err := Decode(subject, again, map[string][]string{HeaderContentType: {ct2}}, now)
			if err != nil {
				t.Fatalf("re-decode (json=%v) of an accepted event: %v\nevent: %v", asJSON, err, ev)
			}
			if !proto.Equal(ev, ev2) {
				t.Fatalf("round trip (json=%v) changed the event:\n got %v\nwant %v", asJSON, ev2, ev)
			}
		}
	})
}

func checkRejection(t *testing.T, err error) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("rejection %v (%T) is not a *ValidationError", err, err)
	}
	if !knownCodes[ve.Code] {
		t.Fatalf("unknown code %q in %v", ve.Code, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "@") || strings.Contains(ve.Value, "@") {
		t.Fatalf("error may quote an email: %q (Value %q)", msg, ve.Value)
	}
	// The message goes into a NATS header: one line, valid UTF-8, bounded.
	if strings.ContainsAny(msg, "\r\n\x00") || !utf8.ValidString(msg) {
		t.Fatalf("error is not header-safe: %q", msg)
	}
	if len(msg) > 1024 {
		t.Fatalf("error is %d bytes long", len(msg))
	}
}

func checkInvariants(t *testing.T, subject string, ev *optoutv1.OptOutEvent) {
	t.Helper()
	if ev == nil {
		t.Fatal("accepted a nil event")
	}
	if want := strings.TrimPrefix(subject, EventsPrefix); ev.GetTenantId() != want || !ValidTenant(want) {
		t.Fatalf("tenant_id %q accepted on subject %q", ev.GetTenantId(), subject)
	}
	if id := ev.GetEventId(); id == "" || utf8.RuneCountInString(id) > MaxEventIDLen || strings.ContainsAny(id, "\r\n\x00") {
		t.Fatalf("bad event_id %q accepted", id)
	}
	p := ev.GetPerson()
	if p.GetSalesConnectId() == "" && p.GetSalesforceId() == "" {
		t.Fatalf("person without ids accepted: %v", p)
	}
	if id := p.GetSalesforceId(); id != "" {
		norm, err := sfid.Normalize(id)
		if len(id) != 18 || err != nil || norm != id {
			t.Fatalf("salesforce_id %q not normalised (%q, %v)", id, norm, err)
		}
		want := map[string]optoutv1.ObjectType{sfid.Contact: optoutv1.ObjectType_CONTACT, sfid.Lead: optoutv1.ObjectType_LEAD}[sfid.ObjectType(id)]
		if want == optoutv1.ObjectType_OBJECT_TYPE_UNSPECIFIED || p.GetObjectType() != want {
			t.Fatalf("salesforce_id %q with object_type %v accepted", id, p.GetObjectType())
		}
	}
	if a := ev.GetAction(); a != optoutv1.Action_UNSUBSCRIBE && a != optoutv1.Action_RESUBSCRIBE {
		t.Fatalf("action %v accepted", a)
	}
	if ts := ev.GetOccurredAt(); ts == nil || ts.CheckValid() != nil || ts.AsTime().After(now.Add(MaxFutureSkew)) {
		t.Fatalf("occurred_at %v accepted", ts)
	}
	if len(ev.GetReason()) > MaxReasonLen {
		t.Fatalf("reason of %d bytes accepted", len(ev.GetReason()))
	}
	if len(ev.ProtoReflect().GetUnknown()) != 0 || len(p.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("unknown fields kept")
	}
	// Normalising is idempotent: validating the result again changes nothing.
	clone := proto.Clone(ev).(*optoutv1.OptOutEvent)
	if err := Validate(clone, now); err != nil || !proto.Equal(clone, ev) {
		t.Fatalf("Validate of an accepted event: %v, changed=%v", err, !proto.Equal(clone, ev))
	}
}
