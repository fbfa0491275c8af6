// Package sandbox emulates the parts of the Salesforce REST APIs that
// optout-sync uses, from ../shared/spec/salesforce-api.md. It is written from
// the spec alone and never imports the project's Salesforce client, so one
// misunderstanding cannot hide in both.
//
// Several orgs are served at once, each on its own origin (OrgHandler): like
// a real org's https://<my-domain>.my.salesforce.com, its My Domain base URL
// (token endpoint at {base}/services/oauth2/token) and its instance_url are
// both a bare origin, http://<host>:<port>, taken from the request's Host.
// Sandbox.ServeHTTP serves the control API under /_sandbox/ (see control.go)
// and the login-host token endpoint; ServeLocal runs it all on loopback.
//
// CONTRACT: the exported names in this file are used by other packages'
// tests; extend them, do not change their signatures.
package sandbox

import (
	"net/http"
	"time"
)

// Config is the whole emulator: its orgs. Loaded from orgs.yaml by the binary.
type Config struct {
	Orgs []OrgConfig `yaml:"orgs" json:"orgs"`
	// Now is the clock (default time.Now); tests pin it.
	Now func() time.Time `yaml:"-" json:"-"`
	// OnCall, when set, sees every logged call (the binary logs them).
	OnCall func(org string, c Call) `yaml:"-" json:"-"`
}

// OrgConfig describes one emulated org.
type OrgConfig struct {
	// Name identifies the org in the control API: /_sandbox/orgs/<Name> ([a-z0-9-]).
	Name string `yaml:"name" json:"name"`
	// Port is where the sfsandbox binary serves this org (its own origin);
	// 0 picks a free port. The package itself ignores it.
	Port         int    `yaml:"port" json:"port"`
	ClientID     string `yaml:"clientId" json:"clientId"`
	ClientSecret string `yaml:"clientSecret" json:"clientSecret"`
	// Username accepted as the JWT bearer `sub`.
	Username string `yaml:"username" json:"username"`
	// JWTPublicKeyPEM verifies RS256 assertions of the jwt-bearer flow.
	JWTPublicKeyPEM string `yaml:"jwtPublicKeyPEM" json:"jwtPublicKeyPEM"`
	// APIVersions served, e.g. ["62.0","63.0"]; others answer 404, listed retired ones 410.
	APIVersions []string `yaml:"apiVersions" json:"apiVersions"`
	// DailyAPILimit is the rolling allowance (Sforce-Limit-Info max).
	DailyAPILimit int `yaml:"dailyApiLimit" json:"dailyApiLimit"`
	// CustomField is the sales opt-out field's API name (default Marketo_Sales_Opt_Out__c).
	CustomField          string `yaml:"customField" json:"customField"`
	CustomFieldInstalled bool   `yaml:"customFieldInstalled" json:"customFieldInstalled"`
	CustomFieldWritable  bool   `yaml:"customFieldWritable" json:"customFieldWritable"`
	// RetiredAPIVersions answer 410 GONE (e.g. "30.0").
	RetiredAPIVersions []string `yaml:"retiredApiVersions" json:"retiredApiVersions"`
	// Behavior selects among the spec's unconfirmed behaviours (config.go).
	Behavior Behavior `yaml:"behavior" json:"behavior"`
}

// Record is a Contact or Lead as stored.
type Record struct {
	ID                 string // 18 chars
	Type               string // "Contact" | "Lead"
	Email              string
	HasOptedOutOfEmail bool
	CustomOptOut       bool // value of the org's custom field when installed
	IsDeleted          bool
	IsConverted        bool   // Leads only
	ConvertedContactID string // Leads only, when converted
	LastModifiedDate   time.Time
	SystemModstamp     time.Time
}

// SeedSpec asks for N fresh records.
type SeedSpec struct {
	Contacts      int
	Leads         int
	OptedOutShare float64 // share with HasOptedOutOfEmail (and the custom field) true
}

// Fault is one injected misbehaviour. Zero fields match everything.
type Fault struct {
	// Route limits the fault to one route name (Route* constants); "" = every data route.
	Route string
	// RecordID (15 or 18 chars) limits the fault to calls touching that record; for
	// collection updates only that record's result fails (per-record error).
	RecordID string
	// Status and ErrorCode/Message form the error answer (JSON array body);
	// HTML sends a text/html body instead. RetryAfter sets that header when non-empty.
	Status     int
	ErrorCode  string
	Message    string
	HTML       bool
	RetryAfter string
	// DropBeforeWrite / DropAfterWrite close the connection without an answer,
	// before or after the write was applied.
	DropBeforeWrite bool
	DropAfterWrite  bool
	// Delay answers normally (or with the fault) after this long.
	Delay time.Duration
	// Skip lets the first Skip matching calls pass (fault on the Nth call);
	// Times applies it to that many calls then removes it (0 = until cleared);
	// Share applies it to that fraction of matching calls (0 = all);
	// Until ends it at that time (zero = no end).
	Skip  int
	Times int
	Share float64
	Until time.Time
	// BulkState ("Failed" or "Aborted"), on RouteBulkQueryGet or RouteBulkIngestGet,
	// moves the polled job to that state (Message = errorMessage) and answers
	// the poll normally.
	BulkState string
}

// Route names for Fault.Route and call logs.
const (
	RouteToken             = "token"
	RouteVersions          = "versions"
	RouteLimits            = "limits"
	RouteDescribe          = "describe"
	RouteSObjectGet        = "sobject.get"
	RouteSObjectPatch      = "sobject.patch"
	RouteCollectionsUpdate = "collections.update"
	RouteCollectionsGet    = "collections.retrieve"
	RouteQuery             = "query"
	RouteQueryMore         = "query.more"
	RouteBulkQueryCreate   = "bulk.query.create"
	RouteBulkQueryGet      = "bulk.query.get"
	RouteBulkQueryResults  = "bulk.query.results"
	RouteBulkIngestCreate  = "bulk.ingest.create"
	RouteBulkIngestUpload  = "bulk.ingest.upload"
	RouteBulkIngestPatch   = "bulk.ingest.patch"
	RouteBulkIngestGet     = "bulk.ingest.get"
	RouteBulkIngestResults = "bulk.ingest.results"
)

// Call is one logged API call.
type Call struct {
	Route      string
	Method     string
	Path       string
	Status     int
	AutoAssign string // Sforce-Auto-Assign header as sent
	Client     string // client=... of Sforce-Call-Options
	Records    int    // records in a collection update
	At         time.Time
	// AssignmentRules tells whether Lead assignment rules would have run
	// (a Lead was written and Sforce-Auto-Assign was absent, TRUE or a rule id).
	AssignmentRules bool
	// Counted tells whether the call was counted against the daily allowance.
	Counted bool
	// FaultID names the injected fault that answered, if any.
	FaultID string
	// Subrequests are the subrequests a POST /composite ran, in the order
	// it ran them (not counted: the composite is the one API call).
	Subrequests []Call
}

// The Go control API. Implemented in the package; signatures are the contract.
var (
	_ = (*Sandbox).ServeHTTP
	_ = (*Sandbox).Org
	_ = (*Org).Seed
	_ = (*Org).Put
	_ = (*Org).Get
	_ = (*Org).Edit
	_ = (*Org).Delete
	_ = (*Org).Undelete
	_ = (*Org).ConvertLead
	_ = (*Org).ExpireTokens
	_ = (*Org).SetLatency
	_ = (*Org).InjectFault
	_ = (*Org).ClearFaults
	_ = (*Org).SetCustomField
	_ = (*Org).APICalls
	_ = (*Org).Calls
	_ = (*Org).SetAPIUsage
	_ = (*Org).Records
	_ = http.Handler((*Sandbox)(nil))
)

// Signatures (implemented in the package):
//
//	func New(cfg Config) (*Sandbox, error)
//	func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request)
//	func (s *Sandbox) Org(name string) *Org // nil when unknown
//	func (o *Org) Seed(spec SeedSpec) []Record
//	func (o *Org) Put(r Record) Record           // insert or replace; ID generated when empty; returns stored
//	func (o *Org) Get(id string) (Record, bool)   // 15 or 18 chars
//	func (o *Org) Edit(id string, f func(*Record)) error // a Salesforce user's edit: bumps SystemModstamp/LastModifiedDate
//	func (o *Org) Delete(id string) error          // to the recycle bin (IsDeleted)
//	func (o *Org) Undelete(id string) error
//	func (o *Org) ConvertLead(leadID string) (contact Record, err error)
//	func (o *Org) ExpireTokens()                  // every issued token now answers 401 INVALID_SESSION_ID
//	func (o *Org) SetLatency(d time.Duration)      // added to every data call
//	func (o *Org) InjectFault(f Fault) (id string)
//	func (o *Org) ClearFaults()
//	func (o *Org) SetCustomField(installed, writable bool)
//	func (o *Org) APICalls() int                   // calls counted against the allowance
//	func (o *Org) Calls() []Call                   // the call log, oldest first
//	func (o *Org) SetAPIUsage(used int)            // e.g. to exhaust the allowance
//	func (o *Org) Records() []Record               // snapshot, sorted by ID
