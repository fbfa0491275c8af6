package sandbox

import (
	"fmt"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultCustomField is the Sales Connect package's opt-out field.
const DefaultCustomField = "Marketo_Sales_Opt_Out__c"

// DefaultAPIVersions are served when an org lists none.
var DefaultAPIVersions = []string{"62.0", "63.0", "64.0", "65.0", "66.0"}

// Behavior holds the choices the spec marks unconfirmed, plus emulator knobs.
// Every zero value means the documented-closest default (see README "Choices").
type Behavior struct {
	// AllowClientCredentialsOnLoginHost lets the root token endpoint (the
	// login.salesforce.com stand-in) accept client_credentials; real orgs refuse.
	AllowClientCredentialsOnLoginHost bool `yaml:"allowClientCredentialsOnLoginHost" json:"allowClientCredentialsOnLoginHost"`
	// JWTAudiences accepted in jwt-bearer assertions; default login/test hosts and the org base URL.
	JWTAudiences []string `yaml:"jwtAudiences" json:"jwtAudiences"`
	// JWTMaxLifetime caps exp-now of an assertion (default 5m, what client libraries send).
	JWTMaxLifetime time.Duration `yaml:"jwtMaxLifetime" json:"jwtMaxLifetime"`
	// RefreshTokenRotation returns a new refresh token and invalidates the old one.
	RefreshTokenRotation bool `yaml:"refreshTokenRotation" json:"refreshTokenRotation"`
	// SessionTimeout expires access tokens after this long without use (0 = never).
	SessionTimeout time.Duration `yaml:"sessionTimeout" json:"sessionTimeout"`
	// MissingAuthErrorCode answers a request without Authorization header
	// (default INVALID_SESSION_ID; INVALID_AUTH_HEADER is the alternative).
	MissingAuthErrorCode string `yaml:"missingAuthErrorCode" json:"missingAuthErrorCode"`
	// Statuses of errors whose HTTP status the spec leaves open (default 400 each).
	ConvertedLeadStatus   int `yaml:"convertedLeadStatus" json:"convertedLeadStatus"`
	LockRowStatus         int `yaml:"lockRowStatus" json:"lockRowStatus"`
	ExceededIDLimitStatus int `yaml:"exceededIdLimitStatus" json:"exceededIdLimitStatus"`
	QueryLocatorStatus    int `yaml:"queryLocatorStatus" json:"queryLocatorStatus"`
	MalformedIDStatus     int `yaml:"malformedIdStatus" json:"malformedIdStatus"`
	// CollectionsMissingRecordCode is the per-record statusCode for a well-formed
	// ID with no record in a collection update (default NOT_FOUND, like §3).
	CollectionsMissingRecordCode string `yaml:"collectionsMissingRecordCode" json:"collectionsMissingRecordCode"`
	// DuplicateIDs in one collection update: "error" (default: later copies
	// fail with DUPLICATE_VALUE) or "apply" (each copy applied in order).
	DuplicateIDs string `yaml:"duplicateIds" json:"duplicateIds"`
	// ChunkLimitErrorCode answers (HTTP 400) a collection with more than 10 chunks.
	ChunkLimitErrorCode string `yaml:"chunkLimitErrorCode" json:"chunkLimitErrorCode"`
	// BulkAdvance moves jobs through their states: "poll" (default, one state
	// per BulkPollsPerState GETs) or "time" (one state per BulkStateDuration).
	BulkAdvance       string        `yaml:"bulkAdvance" json:"bulkAdvance"`
	BulkPollsPerState int           `yaml:"bulkPollsPerState" json:"bulkPollsPerState"`
	BulkStateDuration time.Duration `yaml:"bulkStateDuration" json:"bulkStateDuration"`
	// BulkResultsBeforeComplete: "412" (default, JOB_NOT_COMPLETE) or "204".
	BulkResultsBeforeComplete string `yaml:"bulkResultsBeforeComplete" json:"bulkResultsBeforeComplete"`
	// BulkDefaultMaxRecords is the page size of results without maxRecords (default 100000).
	BulkDefaultMaxRecords int `yaml:"bulkDefaultMaxRecords" json:"bulkDefaultMaxRecords"`
	// BulkEmptyUnquoted writes empty values bare instead of "".
	BulkEmptyUnquoted bool `yaml:"bulkEmptyUnquoted" json:"bulkEmptyUnquoted"`
	// BulkDateTimeFormat is the Go layout of dateTime values in result CSVs
	// (default 2006-01-02T15:04:05.000Z).
	BulkDateTimeFormat string `yaml:"bulkDateTimeFormat" json:"bulkDateTimeFormat"`
	// Concurrent long-running request cap: more than ConcurrentLongRequests
	// requests running for LongRequestThreshold answer ConcurrentLimitStatus
	// REQUEST_LIMIT_EXCEEDED "ConcurrentPerOrgLongTxn Limit exceeded." (25, 20s, 403).
	ConcurrentLongRequests int           `yaml:"concurrentLongRequests" json:"concurrentLongRequests"`
	LongRequestThreshold   time.Duration `yaml:"longRequestThreshold" json:"longRequestThreshold"`
	ConcurrentLimitStatus  int           `yaml:"concurrentLimitStatus" json:"concurrentLimitStatus"`
	// QueryCursorTTL keeps query locators alive (default 48h); MaxQueryCursors
	// evicts the oldest beyond that many (default 200) to bound memory.
	QueryCursorTTL  time.Duration `yaml:"queryCursorTTL" json:"queryCursorTTL"`
	MaxQueryCursors int           `yaml:"maxQueryCursors" json:"maxQueryCursors"`
	// MaxCallLog and MaxChanges bound the call log and change feed (100000, 10000).
	MaxCallLog int `yaml:"maxCallLog" json:"maxCallLog"`
	MaxChanges int `yaml:"maxChanges" json:"maxChanges"`

	// Change Data Capture and Pub/Sub API (spec §9, README "Pub/Sub API").
	// CDCRetention keeps change events this long on the sandbox's clock
	// (default 72h); MaxCDCEvents bounds memory in record changes (a merged
	// event counts its recordIds; default 100000): past twice that, the
	// oldest are purged as if expired.
	CDCRetention time.Duration `yaml:"cdcRetention" json:"cdcRetention"`
	MaxCDCEvents int           `yaml:"maxCdcEvents" json:"maxCdcEvents"`
	// CDCOriginTrailingSlash writes changeOrigin as ...;client=<id>/ (a variant seen in samples).
	CDCOriginTrailingSlash bool `yaml:"cdcOriginTrailingSlash" json:"cdcOriginTrailingSlash"`
	// CDCBulkClient adds client=<Sforce-Call-Options client> to Bulk API 2.0
	// writes' changeOrigin (unconfirmed; default off).
	CDCBulkClient bool `yaml:"cdcBulkClient" json:"cdcBulkClient"`
	// CDCEntities are the entities selected for Change Data Capture (default
	// Contact and Lead); a topic of another entity answers NOT_FOUND.
	CDCEntities []string `yaml:"cdcEntities" json:"cdcEntities"`
	// PubSubKeepalive is how long a Subscribe stream with requested events
	// but none to send waits before an empty keepalive (default 60s, the
	// observed interval; the documented bound is 270s).
	PubSubKeepalive time.Duration `yaml:"pubSubKeepalive" json:"pubSubKeepalive"`
	// PubSubIdleClose closes a stream this long after its last response once
	// nothing is requested any more (default 60s, documented).
	PubSubIdleClose time.Duration `yaml:"pubSubIdleClose" json:"pubSubIdleClose"`
	// PubSubAuthStatus and PubSubLimitStatus are the gRPC status names of an
	// auth failure (default UNAUTHENTICATED) and of a spent delivery
	// allocation (default RESOURCE_EXHAUSTED); both unconfirmed.
	PubSubAuthStatus  string `yaml:"pubSubAuthStatus" json:"pubSubAuthStatus"`
	PubSubLimitStatus string `yaml:"pubSubLimitStatus" json:"pubSubLimitStatus"`
	// DailyDeliveredEvents is the org's delivered-event allocation per rolling
	// 24 h, counted per event per subscriber (default 25000, Enterprise).
	DailyDeliveredEvents int `yaml:"dailyDeliveredEvents" json:"dailyDeliveredEvents"`
}

func (b *Behavior) applyDefaults() {
	if b.JWTMaxLifetime == 0 {
		b.JWTMaxLifetime = 5 * time.Minute
	}
	if b.MissingAuthErrorCode == "" {
		b.MissingAuthErrorCode = "INVALID_SESSION_ID"
	}
	for _, p := range []*int{&b.ConvertedLeadStatus, &b.LockRowStatus, &b.ExceededIDLimitStatus, &b.QueryLocatorStatus, &b.MalformedIDStatus} {
		if *p == 0 {
			*p = 400
		}
	}
	if b.CollectionsMissingRecordCode == "" {
		b.CollectionsMissingRecordCode = "NOT_FOUND"
	}
	if b.DuplicateIDs == "" {
		b.DuplicateIDs = "error"
	}
	if b.ChunkLimitErrorCode == "" {
		b.ChunkLimitErrorCode = "INVALID_BATCH_REQUEST"
	}
	if b.BulkAdvance == "" {
		b.BulkAdvance = "poll"
	}
	if b.BulkPollsPerState <= 0 {
		b.BulkPollsPerState = 1
	}
	if b.BulkStateDuration <= 0 {
		b.BulkStateDuration = time.Second
	}
	if b.BulkResultsBeforeComplete == "" {
		b.BulkResultsBeforeComplete = "412"
	}
	if b.BulkDefaultMaxRecords <= 0 {
		b.BulkDefaultMaxRecords = 100000
	}
	if b.BulkDateTimeFormat == "" {
		b.BulkDateTimeFormat = "2006-01-02T15:04:05.000Z"
	}
	if b.ConcurrentLongRequests <= 0 {
		b.ConcurrentLongRequests = 25
	}
	if b.LongRequestThreshold <= 0 {
		b.LongRequestThreshold = 20 * time.Second
	}
	if b.ConcurrentLimitStatus == 0 {
		b.ConcurrentLimitStatus = 403
	}
	if b.QueryCursorTTL <= 0 {
		b.QueryCursorTTL = 48 * time.Hour
	}
	if b.MaxQueryCursors <= 0 {
		b.MaxQueryCursors = 200
	}
	if b.MaxCallLog <= 0 {
		b.MaxCallLog = 100000
	}
	if b.MaxChanges <= 0 {
		b.MaxChanges = 10000
	}
	if b.CDCRetention <= 0 {
		b.CDCRetention = 72 * time.Hour
	}
	if b.MaxCDCEvents <= 0 {
		b.MaxCDCEvents = 100000
	}
	if len(b.CDCEntities) == 0 {
		b.CDCEntities = []string{"Contact", "Lead"}
	}
	if b.PubSubKeepalive <= 0 {
		b.PubSubKeepalive = 60 * time.Second
	}
	if b.PubSubIdleClose <= 0 {
		b.PubSubIdleClose = 60 * time.Second
	}
	if b.PubSubAuthStatus == "" {
		b.PubSubAuthStatus = "UNAUTHENTICATED"
	}
	if b.PubSubLimitStatus == "" {
		b.PubSubLimitStatus = "RESOURCE_EXHAUSTED"
	}
	if b.DailyDeliveredEvents <= 0 {
		b.DailyDeliveredEvents = 25000
	}
}

var orgNameRE = regexp.MustCompile(`^[a-z0-9-]+$`)

func (c *OrgConfig) applyDefaults() error {
	if !orgNameRE.MatchString(c.Name) {
		return fmt.Errorf("org name %q: must match [a-z0-9-]+", c.Name)
	}
	if c.ClientID == "" {
		c.ClientID = "sandbox-" + c.Name + "-client-id"
	}
	if c.ClientSecret == "" {
		c.ClientSecret = "sandbox-" + c.Name + "-client-secret"
	}
	if c.Username == "" {
		c.Username = "integration@" + c.Name + ".example.com"
	}
	if len(c.APIVersions) == 0 {
		c.APIVersions = append([]string(nil), DefaultAPIVersions...)
	}
	if c.DailyAPILimit <= 0 {
		c.DailyAPILimit = 100000
	}
	if c.CustomField == "" {
		c.CustomField = DefaultCustomField
	}
	c.Behavior.applyDefaults()
	return nil
}

// LoadConfig reads an orgs.yaml file.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("parse config %s: %w", path, err)
	}
	return cfg, nil
}
