package page

import (
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/shared/flow/tenantstatus"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

type layout struct {
	Title, Prefix, Actor string
}

type listPage struct {
	layout
	Tenants []tenantstatus.Summary
}

type messagePage struct {
	layout
	Text string
}

type tenantPage struct {
	layout
	Tenant   string
	Status   *tenantstatus.Status
	Check    *tenantstatus.Check
	Form     form
	Errors   []fieldError
	Saved    bool
	Conflict bool
	CSRF     string
	Panels   []panelView
	// Proof: the person and compliance pages are served.
	Proof bool
	// DeadLetters are the tenant's dead letters by cause (with Deps.DLQ);
	// Retry what the last "Retry these" did.
	DeadLetters []tenantstatus.DeadLetterGroup
	Retry       *retryView

	// RunNow offers "Run now" (sync on, and the page can ask the
	// reconciler); RunID is the run it just started.
	RunNow bool
	RunID  string
}

// ErrorFor returns the problem with one form control, for its inline message.
func (p tenantPage) ErrorFor(id string) string {
	for _, e := range p.Errors {
		if e.ID == id {
			return e.Message
		}
	}
	return ""
}

// InUseProblem is true when the field being written fails the live check:
// the page then warns at the top, not only in the prerequisites section.
func (p tenantPage) InUseProblem() bool { return p.Check != nil && !p.Check.Ready }

type panelView struct {
	ID, Heading string
	Body        template.HTML
	Err         string
}

// fieldError names a form control (its HTML id) and what is wrong with it.
type fieldError struct {
	ID, Message string
}

// form is the settings form as submitted or as stored.
type form struct {
	Sync           bool
	Field          string // email-opt-out | sales-opt-out
	CustomField    string
	ScheduleTime   string
	ScheduleZone   string
	ConflictPolicy string
	CDC            bool
	CDCTopic       string
	Duplicates     bool
	Revision       uint64
}

func formOf(s tenant.Settings, rev uint64) form {
	return form{
		Sync: s.SyncEnabled, Field: tenantstatus.FieldFlag(s.Field), CustomField: s.CustomField,
		ScheduleTime: s.ScheduleTime, ScheduleZone: s.ScheduleZone, ConflictPolicy: s.ConflictPolicy, Revision: rev,
		CDC: s.CDCEnabled, CDCTopic: s.CDCTopic, Duplicates: s.DuplicatesByEmail,
	}
}

func formFrom(v url.Values) form {
	rev, _ := strconv.ParseUint(v.Get("revision"), 10, 64)
	return form{
		Sync:           v.Get("sync") == "on",
		Field:          v.Get("field"),
		CustomField:    strings.TrimSpace(v.Get("custom-field")),
		ScheduleTime:   strings.TrimSpace(v.Get("schedule-time")),
		ScheduleZone:   strings.TrimSpace(v.Get("schedule-zone")),
		ConflictPolicy: v.Get("conflict-policy"),
		CDC:            v.Get("cdc") == "on",
		CDCTopic:       strings.TrimSpace(v.Get("cdc-topic")),
		Duplicates:     v.Get("duplicates") == "on",
		Revision:       rev,
	}
}

// settings turns the form into settings, with one message per wrong control
// in the order they appear on the page. Each control is checked by
// tenant.Settings.Validate on otherwise-default settings, so the page can
// never accept what the store would refuse.
func (f form) settings(t string) (tenant.Settings, []fieldError) {
	s := tenant.Default(t)
	var errs []fieldError
	check := func(id, msg string, set func(*tenant.Settings)) {
		probe := tenant.Default(t)
		set(&probe)
		if probe.Validate() != nil {
			errs = append(errs, fieldError{ID: id, Message: msg})
			return
		}
		set(&s)
	}
	s.SyncEnabled = f.Sync
	field, ok := tenantstatus.ParseFieldFlag(f.Field)
	if !ok {
		errs = append(errs, fieldError{ID: "field-email", Message: "Choose where opt-outs are written: Email Opt Out or the sales opt-out field."})
	} else {
		s.Field = field
	}
	check("custom-field", "Enter the API name of a checkbox field, ending in __c (for example "+tenant.DefaultCustomField+").",
		func(p *tenant.Settings) { p.CustomField = f.CustomField })
	check("schedule-time", "Enter the time of the nightly sync as HH:MM, 24-hour (for example 20:00).",
		func(p *tenant.Settings) { p.ScheduleTime = f.ScheduleTime })
	check("schedule-zone", "Enter a time zone such as America/Los_Angeles.",
		func(p *tenant.Settings) { p.ScheduleZone = f.ScheduleZone })
	check("policy-optout-wins", "Choose what wins when the two sides disagree.",
		func(p *tenant.Settings) { p.ConflictPolicy = f.ConflictPolicy })
	s.CDCEnabled = f.CDC
	check("cdc-topic", "Enter a Change Data Capture topic such as /data/ChangeEvents or a channel such as /data/OptOutSync__chn, or leave it empty.",
		func(p *tenant.Settings) { p.CDCTopic = f.CDCTopic })
	s.DuplicatesByEmail = f.Duplicates
	return s, errs
}

var funcs = template.FuncMap{
	"when":       tenantstatus.FormatTime,
	"age":        tenantstatus.FormatAge,
	"health":     tenantstatus.HealthText,
	"objectText": tenantstatus.ObjectText,
	"fieldLabel": tenantstatus.FieldLabel,
	"fieldFlag":  tenantstatus.FieldFlag,
	"healthy": func(h *tenant.Health) bool {
		return h == nil || h.Mode == tenant.ModeHealthy || h.Mode == ""
	},
	"plural": func(n any, one, many string) string {
		if toInt(n) == 1 {
			return one
		}
		return many
	},
	"duration": func(seconds float64) time.Duration { return time.Duration(seconds * float64(time.Second)) },
	"hasErr":   func(p tenantPage, id string) bool { return p.ErrorFor(id) != "" },
}

func toInt(n any) int64 {
	switch v := n.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case uint64:
		return int64(v)
	}
	return 0
}

// pages are parsed once; a template error is a bug caught by any test.
var pages = struct {
	list, tenant, message, person *template.Template
}{
	person:  parse("templates/person.html"),
	list:    parse("templates/tenants.html"),
	tenant:  parse("templates/tenant.html"),
	message: parse("templates/message.html"),
}

func parse(page string) *template.Template {
	return template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/layout.html", page))
}
