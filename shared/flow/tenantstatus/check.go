package tenantstatus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/optout-sync/optout-sync/shared/adapter/salesforce"
	"github.com/optout-sync/optout-sync/shared/adapter/sfcreds"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
	"github.com/optout-sync/optout-sync/shared/store/tenant"
)

// Salesforce is the part of the Salesforce client the check uses.
type Salesforce interface {
	InstanceURL(ctx context.Context) (string, error)
	Describe(ctx context.Context, sobjectType string) (*salesforce.SObjectDescribe, error)
	Limits(ctx context.Context) (map[string]salesforce.Limit, error)
	LastAPIUsage() (salesforce.APIUsage, bool)
}

// Clients gives a tenant's Salesforce client for one check.
type Clients interface {
	Client(ctx context.Context, tenant string) (Salesforce, error)
}

// SourceClients builds a fresh client from the tenant's credentials for every
// check, so "token ok" means the credentials work now (a pooled client would
// only prove that an old token still does).
type SourceClients struct {
	Source sfcreds.Source
	// Configure adjusts each config (HTTP client, tracer provider, ...).
	Configure func(*salesforce.Config)
}

// Client implements Clients.
func (c SourceClients) Client(ctx context.Context, tenantID string) (Salesforce, error) {
	cfg, err := c.Source.Load(tenantID)
	if err != nil {
		return nil, err
	}
	if c.Configure != nil {
		c.Configure(&cfg)
	}
	cl, err := salesforce.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return cl, nil
}

// Check is the live prerequisite check of one tenant.
type Check struct {
	CheckedAt   time.Time     `json:"checkedAt"`
	Credentials Result        `json:"credentials"`
	Token       Result        `json:"token"`
	Fields      []FieldStatus `json:"fields"`
	Allowance   *Allowance    `json:"allowance,omitempty"`
	// Ready says the opt-outs of this tenant can be written: credentials,
	// token and the field in use all pass.
	Ready bool `json:"ready"`
	// Problems lists everything that fails, each with what to do.
	Problems []Problem `json:"problems,omitempty"`
}

// Result of one step; Checked is false when an earlier step failed.
type Result struct {
	Checked bool   `json:"checked"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail,omitempty"`
}

// FieldStatus is one opt-out field option on Contact and Lead.
type FieldStatus struct {
	Option tenant.Field `json:"option"`
	Field  string       `json:"field"`
	// Chosen: the tenant's choice; InUse: what the pusher writes now (the
	// choice only applies while sync is on).
	Chosen   bool          `json:"chosen"`
	InUse    bool          `json:"inUse"`
	Checked  bool          `json:"checked"`
	OK       bool          `json:"ok"`
	Objects  []ObjectField `json:"objects,omitempty"`
	Problems []Problem     `json:"problems,omitempty"`
}

// ObjectField is a field as one object's describe shows it.
type ObjectField struct {
	Object   string `json:"object"`
	Present  bool   `json:"present"`
	Writable bool   `json:"writable"`
	Type     string `json:"type,omitempty"`
}

// Allowance is the org's daily API allocation.
type Allowance struct {
	Used      int64  `json:"used"`
	Max       int64  `json:"max"`
	Remaining int64  `json:"remaining"`
	Source    string `json:"source"` // "Sforce-Limit-Info" or "limits"
}

// Problem is one failing prerequisite and what to do about it, written for
// the Salesforce admin who reads the page.
type Problem struct {
	What string `json:"what"`
	Fix  string `json:"fix"`
}

// Check runs the live prerequisite check for settings s: credentials, a
// token, the describe of Contact and Lead (both field options are checked
// from the same two calls, so the admin sees whether switching would work)
// and the org's API allowance. It never fails as a whole: what could not be
// checked says why.
func (in *Inspector) Check(ctx context.Context, tenantID string, s tenant.Settings) *Check {
	timeout := in.CheckTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &Check{CheckedAt: in.now()}
	c.Fields = []FieldStatus{
		{Option: tenant.EmailOptOut, Field: tenant.StandardField, Chosen: s.Field == tenant.EmailOptOut},
		{Option: tenant.SalesOptOut, Field: s.CustomField, Chosen: s.Field == tenant.SalesOptOut},
	}
	for i := range c.Fields {
		c.Fields[i].InUse = c.Fields[i].Field == s.TargetField()
	}
	defer c.finish()

	client, err := in.Salesforce.Client(ctx, tenantID)
	c.Credentials.Checked = true
	if err != nil {
		c.Credentials.Detail = safe(err)
		if errors.Is(err, sfcreds.ErrNoCredentials) {
			c.problem("No Salesforce credentials are configured for this tenant.",
				"Add the tenant's Salesforce Secret (token_url with client_id and client_secret, or with username and jwt_key.pem). Opt-outs wait until then; none is lost.")
		} else {
			c.problem("The tenant's Salesforce credentials are unusable: "+safe(err),
				"Correct the tenant's Salesforce Secret. Opt-outs wait until then; none is lost.")
		}
		return c
	}
	c.Credentials.OK = true

	c.Token.Checked = true
	if _, err := client.InstanceURL(ctx); err != nil {
		c.Token.Detail = safe(err)
		c.problem("Salesforce did not issue a token: "+safe(err), tokenFix(err))
		return c
	}
	c.Token.OK = true

	descs := map[string]*salesforce.SObjectDescribe{}
	for _, obj := range salesforce.OptOutTypes {
		d, err := client.Describe(ctx, obj)
		if err != nil {
			c.problem(fmt.Sprintf("Salesforce refused to describe %s: %s", obj, safe(err)), describeFix(err))
			return c
		}
		descs[obj] = d
	}
	for i := range c.Fields {
		checkField(&c.Fields[i], descs)
	}
	c.Allowance = allowance(ctx, client)
	if a := c.Allowance; a != nil && a.Max > 0 && a.Remaining <= 0 {
		c.problem(fmt.Sprintf("The org's daily API allowance is spent (%d of %d requests used).", a.Used, a.Max),
			"Opt-outs wait and are pushed as the rolling 24-hour window frees requests. Raise the org's allowance or reduce other integrations' use.")
	}
	return c
}

// finish decides Ready and collects the problems of the field in use.
func (c *Check) finish() {
	fieldOK := false
	for _, f := range c.Fields {
		if f.InUse {
			fieldOK = f.OK
			c.Problems = append(c.Problems, f.Problems...)
		}
	}
	c.Ready = c.Credentials.OK && c.Token.OK && fieldOK
}

func (c *Check) problem(what, fix string) {
	c.Problems = append(c.Problems, Problem{What: what, Fix: fix})
}

func checkField(f *FieldStatus, descs map[string]*salesforce.SObjectDescribe) {
	f.Checked = true
	var missing, readOnly, wrongType []string
	for _, obj := range salesforce.OptOutTypes {
		of := ObjectField{Object: obj}
		if d, ok := descs[obj].Field(f.Field); ok {
			of.Present, of.Writable, of.Type = true, d.Updateable, d.Type
		}
		f.Objects = append(f.Objects, of)
		switch {
		case !of.Present:
			missing = append(missing, obj)
		case !of.Writable:
			readOnly = append(readOnly, obj)
		}
		if of.Present && of.Type != "" && of.Type != "boolean" {
			wrongType = append(wrongType, fmt.Sprintf("%s (type %s)", obj, of.Type))
		}
	}
	label := f.Field
	if f.Option == tenant.EmailOptOut {
		label = "Email Opt Out (" + f.Field + ")"
	}
	if len(missing) > 0 {
		what := fmt.Sprintf("%s is missing on %s.", label, strings.Join(missing, " and "))
		fix := fmt.Sprintf("Install the sales opt-out checkbox %s on Lead and Contact (it comes with the Sales Connect package), or enter the API name of your own checkbox field. If it is installed, give the integration user Read and Edit access to it. Until then, choose Email Opt Out.", f.Field)
		if f.Option == tenant.EmailOptOut {
			fix = "The integration user cannot see Email Opt Out: give its profile or permission set Read and Edit access to Email Opt Out on Lead and Contact (Setup, Object Manager, Field-Level Security)."
		}
		f.Problems = append(f.Problems, Problem{What: what, Fix: fix})
	}
	if len(readOnly) > 0 {
		f.Problems = append(f.Problems, Problem{
			What: fmt.Sprintf("%s is not writable on %s.", label, strings.Join(readOnly, " and ")),
			Fix:  fmt.Sprintf("Give the integration user's profile or permission set Edit access to %s on %s (Field-Level Security), and make sure it is not a formula field.", f.Field, strings.Join(readOnly, " and ")),
		})
	}
	if len(wrongType) > 0 {
		f.Problems = append(f.Problems, Problem{
			What: fmt.Sprintf("%s is not a checkbox on %s.", label, strings.Join(wrongType, " and ")),
			Fix:  "The opt-out field must be a checkbox (boolean). Enter the API name of a checkbox field.",
		})
	}
	f.OK = len(f.Problems) == 0
}

// allowance reads the api-usage Salesforce reported on the describe answers,
// and asks GET /limits only when no answer carried it.
func allowance(ctx context.Context, client Salesforce) *Allowance {
	if u, ok := client.LastAPIUsage(); ok {
		return &Allowance{Used: u.Used, Max: u.Max, Remaining: u.Max - u.Used, Source: "Sforce-Limit-Info"}
	}
	limits, err := client.Limits(ctx)
	if err != nil {
		return nil
	}
	l, ok := limits["DailyApiRequests"]
	if !ok {
		return nil
	}
	return &Allowance{Used: l.Max - l.Remaining, Max: l.Max, Remaining: l.Remaining, Source: "limits"}
}

// safe renders an error for a page or a terminal: the client never puts a
// token in its errors, and redaction also hides an integration user's email
// that a token endpoint may echo.
func safe(err error) string { return logx.Redact(err.Error()) }

func tokenFix(err error) string {
	var e *salesforce.Error
	if errors.As(err, &e) && e.Code == salesforce.CodeUnsafeEndpoint {
		return "Credentials go only over https to the org's own hosts: set the tenant's token_url to its https My Domain URL; if Salesforce really serves the org from the host named above, add it to " +
			salesforce.EnvAllowedHosts + ". Nothing was sent there. Opt-outs wait until then; none is lost."
	}
	switch salesforce.ClassOf(err) {
	case salesforce.Auth, salesforce.PermanentTenant:
		return "Check the connected app's consumer key and secret (or the JWT key and username) in the tenant's Secret, that the app is approved for the integration user, and that the user is active. Opt-outs wait until then; none is lost."
	case salesforce.Quota:
		return "The org's API allowance is spent; opt-outs wait and are pushed as it frees up."
	}
	return "This is often temporary (network or Salesforce maintenance); check again in a minute. Opt-outs keep waiting and are retried."
}

func describeFix(err error) string {
	switch salesforce.ClassOf(err) {
	case salesforce.Auth, salesforce.PermanentTenant:
		return "Make sure the integration user has the API Enabled permission and read access to Leads and Contacts."
	case salesforce.Quota:
		return "The org's API allowance is spent; opt-outs wait and are pushed as it frees up."
	}
	return "This is often temporary (network or Salesforce maintenance); check again in a minute. Opt-outs keep waiting and are retried."
}
