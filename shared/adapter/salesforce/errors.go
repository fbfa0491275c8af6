package salesforce

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Class says what a caller should do about a failure
// (docs/architecture.md#failure-classes).
type Class int

// The failure classes. The zero value ClassNone is what ClassOf returns for a
// nil error.
const (
	ClassNone Class = iota
	// Retryable: back off and try again (network, 5xx, lock contention,
	// concurrency limits, anything not recognised).
	Retryable
	// Auth: the session was rejected even after the client's one refresh.
	Auth
	// Quota: the org's daily API allocation is spent; pause the tenant.
	Quota
	// PermanentRecord: this record can never take the write; record and DLQ.
	PermanentRecord
	// PermanentTenant: the tenant's setup is wrong (field, credentials, API
	// version); mark it unhealthy and keep its messages.
	PermanentTenant
	// ReplayLost: the Pub/Sub API refused a stored replay id (corrupted, or
	// older than the 72 h retention, spec §9.4). Retrying it fails the same
	// way, and jumping to LATEST silently loses events: resubscribe LATEST
	// and reconcile what the gap may hold.
	ReplayLost
)

// HoldsTenant reports whether the failure is the tenant's as a whole (its
// credentials, setup or allowance): its writes wait until that is fixed,
// and a call that ended so is no success for the tenant's health.
func (c Class) HoldsTenant() bool {
	return c == Auth || c == Quota || c == PermanentTenant
}

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case Retryable:
		return "retryable"
	case Auth:
		return "auth"
	case Quota:
		return "quota"
	case PermanentRecord:
		return "permanent-record"
	case PermanentTenant:
		return "permanent-tenant"
	case ReplayLost:
		return "replay-lost"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Codes the client itself assigns, for failures that carry no Salesforce code.
const (
	// CodeTransport: no HTTP answer (connection refused or reset, timeout).
	CodeTransport = "TRANSPORT_ERROR"
	// CodeNonJSON: an HTML page or otherwise unreadable body (CDN, proxy, maintenance).
	CodeNonJSON = "NON_JSON_RESPONSE"
	// CodeResultMismatch: the answer did not match the request (result count,
	// CSV row count), so nothing in it can be trusted.
	CodeResultMismatch = "RESULT_MISMATCH"
	// CodeFieldUnusable: CheckOptOutField found the field missing, read-only or
	// not a checkbox.
	CodeFieldUnusable = "OPT_OUT_FIELD_UNUSABLE"
	// CodeInvalidArgument: the caller passed something the API cannot take.
	CodeInvalidArgument = "INVALID_ARGUMENT"
	// CodeBulkJobFailed / CodeBulkJobAborted / CodeBulkJobTimeout: a Bulk API
	// 2.0 job ended without results (see bulk.go).
	CodeBulkJobFailed  = "BULK_JOB_FAILED"
	CodeBulkJobAborted = "BULK_JOB_ABORTED"
	CodeBulkJobTimeout = "BULK_JOB_TIMEOUT"
	// CodeUndecodableEvent: a Pub/Sub event whose payload its writer schema
	// cannot decode.
	CodeUndecodableEvent = "UNDECODABLE_EVENT"
)

// The Pub/Sub API's own codes, sent in the error-code trailer (spec §9.4).
const (
	CodePubSubAuth         = "sfdc.platform.eventbus.grpc.service.auth.error"
	CodeEventLimitExceeded = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
	// CodeReplayIDCorrupted is the one code of a refused replay id: the
	// variant some clients match (…replayid.validation.failed) and test
	// doubles' bare INVALID_ARGUMENT "The Replay ID validation failed." are
	// reported under it too, so callers recognise one code (class ReplayLost).
	CodeReplayIDCorrupted        = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
	codeReplayIDValidationFailed = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
)

// Error is the one error type of this package. Every failure returned by the
// client is (or wraps) an *Error whose Class was set by Classify.
type Error struct {
	Op      string   // what the client was doing, e.g. "update opt-out"
	Status  int      // HTTP status; 0 when there was no answer
	Code    string   // Salesforce errorCode/statusCode, OAuth error, or a Code* constant
	Message string   // Salesforce's message (truncated); never holds tokens
	Fields  []string // fields named by Salesforce, when any
	Class   Class
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the underlying cause for transport failures (URL stripped).
	Err error
	// GRPCStatus is the gRPC status of a Pub/Sub API failure (codes.OK, the
	// zero value, for REST failures).
	GRPCStatus codes.Code
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("salesforce")
	if e.Op != "" {
		b.WriteString(": ")
		b.WriteString(e.Op)
	}
	b.WriteString(": ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "HTTP %d ", e.Status)
	}
	if e.GRPCStatus != codes.OK {
		fmt.Fprintf(&b, "gRPC %s ", e.GRPCStatus)
	}
	if e.Code != "" {
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	} else if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if len(e.Fields) > 0 {
		fmt.Fprintf(&b, " (fields %s)", strings.Join(e.Fields, ","))
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	fmt.Fprintf(&b, " [%s]", e.Class)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of any error returned by this package. Errors that
// are not (and do not wrap) an *Error, such as context cancellation, are
// Retryable: nothing proves the opt-out cannot be written later.
func ClassOf(err error) Class {
	if err == nil {
		return ClassNone
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Retryable
}

// Classify is the single place that maps an HTTP status and a Salesforce (or
// OAuth, or client) error code to a Class. message is consulted only where
// Salesforce reuses one code for different situations (REQUEST_LIMIT_EXCEEDED
// for the daily allocation and for concurrency; INVALID_SESSION_ID for a
// token without the api scope).
//
// Known codes decide first, then the status. Unknown codes on any status are
// Retryable: an opt-out must never be dropped on a guess, so the caller
// retries with its own cap and then parks the message.
func Classify(status int, code, message string) Class {
	switch code {
	case "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION",
		"QUERY_TIMEOUT", "REQUEST_RUNNING_TOO_LONG",
		"ALL_OR_NONE_OPERATION_ROLLED_BACK",         // the record itself was fine
		"INVALID_QUERY_LOCATOR", "JOB_NOT_COMPLETE", // restart the read
		"rate_limit_exceeded", // token endpoint throttling
		CodeTransport, CodeResultMismatch,
		CodeBulkJobAborted, CodeBulkJobFailed, CodeBulkJobTimeout:
		return Retryable
	case "REQUEST_LIMIT_EXCEEDED":
		// "ConcurrentPerOrgLongTxn Limit exceeded.", "ConcurrentRequests (...)"
		// clear in seconds; "TotalRequests Limit exceeded." needs the rolling
		// 24 h window to move.
		if strings.Contains(strings.ToLower(message), "concurrent") {
			return Retryable
		}
		return Quota
	case "INVALID_SESSION_ID":
		// A token without the api scope: a new one will be the same.
		if strings.Contains(message, "not valid for use with the REST API") {
			return PermanentTenant
		}
		return Auth
	case "INVALID_AUTH_HEADER":
		return Auth
	case "ENTITY_IS_DELETED", "MALFORMED_ID", "NOT_FOUND", "INVALID_ID_FIELD",
		"INVALID_CROSS_REFERENCE_KEY", "FIELD_CUSTOM_VALIDATION_EXCEPTION",
		"CANNOT_UPDATE_CONVERTED_LEAD", "MISSING_ARGUMENT",
		"INSUFFICIENT_ACCESS_OR_READONLY", "DUPLICATE_VALUE":
		return PermanentRecord
	case "INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_TYPE",
		"MALFORMED_QUERY", "INSUFFICIENT_ACCESS", "API_DISABLED_FOR_ORG",
		"API_CURRENTLY_DISABLED", "FUNCTIONALITY_NOT_ENABLED",
		"EXCEEDED_ID_LIMIT", "INVALID_BATCH_REQUEST", "REQUIRED_FIELD_MISSING",
		"UNSUPPORTED_API_VERSION",
		// OAuth token endpoint: bad or unapproved credentials.
		"invalid_grant", "invalid_client", "invalid_client_id",
		"unauthorized_client", "unsupported_grant_type", "invalid_request",
		"inactive_user", "inactive_org",
		CodeFieldUnusable, CodeInvalidArgument:
		return PermanentTenant
	}
	// Unknown codes, and CodeNonJSON (an HTML page says nothing beyond its
	// status), are decided by the status.
	switch {
	case status == 0, status == http.StatusRequestTimeout, status == 420,
		status == http.StatusTooManyRequests, status >= 500:
		return Retryable
	case status == http.StatusUnauthorized:
		return Auth
	case status == http.StatusGone, // API version retired
		status == http.StatusRequestURITooLong, status == http.StatusRequestHeaderFieldsTooLarge:
		return PermanentTenant
	}
	return Retryable
}

// ClassifyGRPC is Classify for the Pub/Sub API (gRPC): a status, the
// error-code trailer (errorCode, "" when absent) and the status message.
// Trailer codes decide first, then the status; the message only where a
// status is known to carry two situations. Unknown codes and statuses are
// Retryable, as on REST.
func ClassifyGRPC(status codes.Code, errorCode, message string) Class {
	switch errorCode {
	case CodePubSubAuth:
		return Auth
	case CodeEventLimitExceeded:
		return Quota
	case CodeReplayIDCorrupted, codeReplayIDValidationFailed:
		return ReplayLost
	}
	switch status {
	case codes.Unauthenticated:
		return Auth
	case codes.InvalidArgument:
		// Test doubles send the replay-id refusal without a trailer code [obs].
		if strings.Contains(message, "Replay ID validation failed") {
			return ReplayLost
		}
		// Anything else (another topic on a live stream, a malformed request)
		// is sent the same way again.
		return PermanentTenant
	case codes.ResourceExhausted:
		if strings.Contains(message, "event delivery limit") {
			return Quota
		}
		return Retryable
	case codes.NotFound, // a topic of an entity not selected for CDC, an unknown channel
		codes.PermissionDenied, codes.Unimplemented:
		return PermanentTenant
	}
	// UNAVAILABLE (maintenance, reset streams), DEADLINE_EXCEEDED, INTERNAL,
	// ABORTED, CANCELED, UNKNOWN and the rest: back off and resume.
	return Retryable
}

// NewGRPCError is the *Error of a Pub/Sub API failure, classified by
// ClassifyGRPC. Its Code is the trailer code, or CodeReplayIDCorrupted for
// every form of a refused replay id.
func NewGRPCError(op string, status codes.Code, errorCode, message string) *Error {
	class := ClassifyGRPC(status, errorCode, message)
	if class == ReplayLost {
		errorCode = CodeReplayIDCorrupted
	}
	return &Error{Op: op, GRPCStatus: status, Code: errorCode, Message: truncate(message), Class: class}
}

// newError builds an *Error with its class decided by Classify.
func newError(op string, status int, code, message string) *Error {
	return &Error{Op: op, Status: status, Code: code, Message: message, Class: Classify(status, code, message)}
}

// maxMessage bounds Salesforce messages kept in errors: some echo the whole
// SOQL statement.
const maxMessage = 500

func truncate(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return s[:maxMessage] + "…"
}

// sfErrorItem is one element of the REST error array (errorCode) or of a
// collection result (statusCode).
type sfErrorItem struct {
	Message    string   `json:"message"`
	ErrorCode  string   `json:"errorCode"`
	StatusCode string   `json:"statusCode"`
	Fields     []string `json:"fields"`
}

func (it sfErrorItem) code() string {
	if it.ErrorCode != "" {
		return it.ErrorCode
	}
	return it.StatusCode
}

// errorFromResponse reads a non-2xx response into an *Error. The body is
// REST's JSON array, the token endpoint's {"error","error_description"}
// object, or an HTML page from the edge. recordScope says whether the request
// was about one record: a per-record code (NOT_FOUND, say) on a request about
// no single record cannot be pinned on any record, so it is the tenant's to
// fix and its messages are kept rather than dead-lettered.
func errorFromResponse(op string, resp *http.Response, recordScope bool) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := parseErrorBody(op, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if e.Class == PermanentRecord && !recordScope {
		e.Class = PermanentTenant
	}
	return e
}

func parseErrorBody(op string, status int, contentType string, body []byte) *Error {
	trimmed := strings.TrimSpace(string(body))
	if strings.Contains(contentType, "html") || strings.HasPrefix(trimmed, "<") {
		return newError(op, status, CodeNonJSON, "HTML error page")
	}
	switch {
	case strings.HasPrefix(trimmed, "["):
		var items []sfErrorItem
		if json.Unmarshal(body, &items) == nil && len(items) > 0 {
			e := newError(op, status, items[0].code(), truncate(items[0].Message))
			e.Fields = items[0].Fields
			return e
		}
	case strings.HasPrefix(trimmed, "{"):
		var obj struct {
			sfErrorItem
			OAuthError       string `json:"error"`
			ErrorDescription string `json:"error_description"`
		}
		if json.Unmarshal(body, &obj) == nil {
			if obj.OAuthError != "" {
				return newError(op, status, obj.OAuthError, truncate(obj.ErrorDescription))
			}
			if obj.code() != "" {
				e := newError(op, status, obj.code(), truncate(obj.Message))
				e.Fields = obj.Fields
				return e
			}
		}
	case trimmed == "":
		return newError(op, status, "", http.StatusText(status))
	}
	return newError(op, status, CodeNonJSON, "unreadable error body")
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
