package page_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	optoutv1 "github.com/optout-sync/optout-sync/proto/optout/v1"
	"github.com/optout-sync/optout-sync/services/admin/page"
	"github.com/optout-sync/optout-sync/shared/adapter/deadletter"
	"github.com/optout-sync/optout-sync/shared/domain/event"
)

func withDLQ(d *page.Deps) { d.DLQ = &deadletter.DLQ{} }

// deadLetter writes a dead letter of cause code for acme, as the pusher
// does: a valid event (replayable) unless body is given.
func (u *ui) deadLetter(id, code string, body []byte) {
	u.t.Helper()
	data, ctype := body, "application/json"
	if data == nil {
		var err error
		data, ctype, err = event.Encode(&optoutv1.OptOutEvent{EventId: id, TenantId: "acme",
			Person: &optoutv1.Person{SalesConnectId: "sc-" + id, SalesforceId: "003RO0000035WQgYAM"}, Action: optoutv1.Action_UNSUBSCRIBE,
			OccurredAt: timestamppb.New(time.Now().Add(-time.Hour)), Source: optoutv1.Source_EMAIL_LINK}, true)
		if err != nil {
			u.t.Fatal(err)
		}
	}
	err := deadletter.DeadLetterer{JS: u.p.JS, Topology: u.p.Topology}.Write(u.ctx, deadletter.Letter{Tenant: "acme",
		Subject: u.p.Topology.EventsSubject("acme"), Header: map[string][]string{event.HeaderContentType: {ctype}}, Data: data,
		Cause: errors.New(code + ": refused"), Code: code, Class: "permanent_record"})
	if err != nil {
		u.t.Fatal(err)
	}
}

func TestDeadLettersByCauseAndRetryThese(t *testing.T) {
	t.Parallel()
	u := newUI(t, withDLQ)
	u.deadLetter("evt-fls-1", "INVALID_FIELD_FOR_INSERT_UPDATE", nil)
	u.deadLetter("evt-fls-2", "INVALID_FIELD_FOR_INSERT_UPDATE", nil)
	u.deadLetter("evt-bad", "bad_enum", []byte(`{"eventId":"evt-bad","tenantId":"acme","action":"MAYBE"}`))

	body := u.get("/admin/tenants/acme")
	for _, want := range []string{"Dead letters by cause", "<code>INVALID_FIELD_FOR_INSERT_UPDATE</code>", "Field-level security: give the integration user edit access",
		"<code>bad_enum</code>", "The event did not follow the schema"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Index(body, "INVALID_FIELD_FOR_INSERT_UPDATE") > strings.Index(body, "<code>bad_enum</code>") {
		t.Errorf("the larger cause is not listed first")
	}

	// The admin fixed field-level security: retry those two.
	v := formValues(t, body)
	form := map[string][]string{"csrf": {v.Get("csrf")}, "code": {"INVALID_FIELD_FOR_INSERT_UPDATE"}}
	code, h, _ := u.do("POST", "/admin/tenants/acme/dead-letters/retry", form, nil)
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "replayed=2") {
		t.Fatalf("retry: %d, location %q", code, h.Get("Location"))
	}
	if n := u.events(); n != 2 {
		t.Errorf("%d events republished to optout.v1.events.acme; want the 2 retried", n)
	}
	after := u.get(strings.TrimPrefix(h.Get("Location"), u.url))
	if !strings.Contains(after, "Retried the dead letters of INVALID_FIELD_FOR_INSERT_UPDATE: 2 sent again") || strings.Contains(after, "<code>INVALID_FIELD_FOR_INSERT_UPDATE</code>") {
		t.Errorf("after the retry the page does not say so, or still lists the cause")
	}
	// A copy that still fails validation stays where it is, and says so.
	form["code"] = []string{"bad_enum"}
	if _, h, _ := u.do("POST", "/admin/tenants/acme/dead-letters/retry", form, nil); !strings.Contains(h.Get("Location"), "invalid=1") {
		t.Errorf("retrying an invalid copy: location %q", h.Get("Location"))
	}
	if n, err := (deadletter.DLQ{JS: u.p.JS, Topology: u.p.Topology}).Count(u.ctx, "acme"); err != nil || n != 1 {
		t.Errorf("%d dead letters left, %v; want the invalid one kept", n, err)
	}
	// Without the form token nothing is retried.
	if code, _, _ := u.do("POST", "/admin/tenants/acme/dead-letters/retry", map[string][]string{"code": {"bad_enum"}}, nil); code != http.StatusForbidden {
		t.Errorf("retry without the form token: %d", code)
	}
}

// events counts the messages on acme's events subject.
func (u *ui) events() uint64 {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
	defer cancel()
	s, err := u.p.JS.Stream(ctx, u.p.Topology.EventsStream())
	if err != nil {
		u.t.Fatal(err)
	}
	subj := u.p.Topology.EventsSubject("acme")
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		u.t.Fatal(err)
	}
	return info.State.Subjects[subj]
}
