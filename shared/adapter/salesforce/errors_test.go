package salesforce

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
)

func TestClassifyTable(t *testing.T) {
	cases := []struct {
		status        int
		code, message string
		want          Class
	}{
		// retryable
		{0, CodeTransport, "", Retryable},
		{503, "SERVER_UNAVAILABLE", "Server too busy", Retryable},
		{503, CodeNonJSON, "HTML error page", Retryable},
		{502, CodeNonJSON, "", Retryable},
		{420, CodeNonJSON, "", Retryable},
		{429, "", "", Retryable},
		{500, "UNKNOWN_EXCEPTION", "An unexpected error occurred", Retryable},
		{500, "", "", Retryable},
		{400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access", Retryable},
		{0, "UNABLE_TO_LOCK_ROW", "", Retryable},
		{403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", Retryable},
		{403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded.", Retryable},
		{400, "INVALID_QUERY_LOCATOR", "invalid query locator", Retryable},
		{0, "ALL_OR_NONE_OPERATION_ROLLED_BACK", "", Retryable},
		// unknown codes are never dropped
		{400, "SOMETHING_NEW", "", Retryable},
		{0, "SOMETHING_NEW", "", Retryable},
		{403, "", "", Retryable},
		// auth
		{401, "INVALID_SESSION_ID", "Session expired or invalid", Auth},
		{401, "INVALID_AUTH_HEADER", "INVALID_HEADER_TYPE", Auth},
		{401, "", "", Auth},
		// quota
		{403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", Quota},
		// permanent per record
		{404, "ENTITY_IS_DELETED", "entity is deleted", PermanentRecord},
		{400, "MALFORMED_ID", "Contact ID: id value of incorrect type", PermanentRecord},
		{404, "NOT_FOUND", "The requested resource does not exist", PermanentRecord},
		{400, "INVALID_CROSS_REFERENCE_KEY", "", PermanentRecord},
		{400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "", PermanentRecord},
		{400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", PermanentRecord},
		{0, "MISSING_ARGUMENT", "Id not specified in an update call", PermanentRecord},
		{0, "DUPLICATE_VALUE", "", PermanentRecord},
		// permanent per tenant
		{400, "INVALID_FIELD", "No such column 'Foo__c' on sobject of type Contact", PermanentTenant},
		{400, "INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: X.", PermanentTenant},
		{0, CodeFieldUnusable, "", PermanentTenant},
		{400, "invalid_grant", "authentication failure", PermanentTenant},
		{400, "invalid_client", "invalid client credentials", PermanentTenant},
		{400, "invalid_client_id", "client identifier invalid", PermanentTenant},
		{410, "", "", PermanentTenant},
		{414, "", "", PermanentTenant},
		{414, CodeNonJSON, "HTML error page", PermanentTenant},
		{410, CodeNonJSON, "HTML error page", PermanentTenant},
		{200, CodeNonJSON, "", Retryable},
		{401, "INVALID_SESSION_ID", "This session is not valid for use with the REST API", PermanentTenant},
		{400, "MALFORMED_QUERY", "unexpected token: FRM", PermanentTenant},
	}
	for _, c := range cases {
		got := Classify(c.status, c.code, c.message)
		assert.Equal(t, c.want, got, "Classify(%d, %q, %q)", c.status, c.code, c.message)
	}
}

func TestClassOf(t *testing.T) {
	assert.Equal(t, ClassNone, ClassOf(nil))
	assert.Equal(t, Retryable, ClassOf(context.Canceled))
	e := newError("x", 404, "ENTITY_IS_DELETED", "entity is deleted")
	assert.Equal(t, PermanentRecord, ClassOf(e))
	assert.Equal(t, PermanentRecord, ClassOf(fmt.Errorf("push: %w", e)))
	assert.Equal(t, "permanent-record", PermanentRecord.String())
}

func TestParseErrorBody(t *testing.T) {
	e := parseErrorBody("op", 400, "application/json", []byte(`[{"message":"No such column","errorCode":"INVALID_FIELD","fields":["Foo__c"]}]`))
	assert.Equal(t, "INVALID_FIELD", e.Code)
	assert.Equal(t, []string{"Foo__c"}, e.Fields)
	assert.Equal(t, PermanentTenant, e.Class)

	e = parseErrorBody("op", 400, "application/json", []byte(`{"error":"invalid_grant","error_description":"authentication failure"}`))
	assert.Equal(t, "invalid_grant", e.Code)
	assert.Equal(t, "authentication failure", e.Message)
	assert.Equal(t, PermanentTenant, e.Class)

	e = parseErrorBody("op", 503, "text/html", []byte(`<html><body>down</body></html>`))
	assert.Equal(t, CodeNonJSON, e.Code)
	assert.Equal(t, Retryable, e.Class)
	assert.NotContains(t, e.Error(), "<html>")

	e = parseErrorBody("op", 400, "application/json", []byte(`<!DOCTYPE html>`)) // mislabelled
	assert.Equal(t, CodeNonJSON, e.Code)

	e = parseErrorBody("op", 500, "", nil)
	assert.Equal(t, Retryable, e.Class)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	assert.Equal(t, 7*time.Second, parseRetryAfter("7", now))
	assert.Equal(t, time.Duration(0), parseRetryAfter("", now))
	assert.Equal(t, time.Duration(0), parseRetryAfter("soon", now))
	assert.Equal(t, 90*time.Second, parseRetryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now))
}

func TestErrorText(t *testing.T) {
	e := &Error{Op: "update opt-out", Status: 503, Code: "SERVER_UNAVAILABLE", Message: "Server too busy", Class: Retryable, RetryAfter: 5 * time.Second}
	assert.Equal(t, "salesforce: update opt-out: HTTP 503 SERVER_UNAVAILABLE: Server too busy (retry after 5s) [retryable]", e.Error())
	inner := errors.New("connection reset by peer")
	e = &Error{Op: "query", Code: CodeTransport, Class: Retryable, Err: inner}
	assert.ErrorIs(t, e, inner)
}

// The Pub/Sub API's failures (spec §9.4): trailer codes first, then the
// gRPC status; unknown ones retryable, as on REST.
func TestClassifyGRPCTable(t *testing.T) {
	cases := []struct {
		status    codes.Code
		errorCode string
		message   string
		want      Class
	}{
		{codes.Unauthenticated, CodePubSubAuth, "Authentication exception. rpcId: x", Auth},
		{codes.PermissionDenied, CodePubSubAuth, "", Auth},
		{codes.Unauthenticated, "", "", Auth},
		{codes.ResourceExhausted, CodeEventLimitExceeded, "You have exceeded the event delivery limit for your org.", Quota},
		{codes.Internal, CodeEventLimitExceeded, "", Quota},
		{codes.ResourceExhausted, "", "You have exceeded the event delivery limit for your org. rpcId: x", Quota},
		{codes.InvalidArgument, CodeReplayIDCorrupted, "The Replay ID validation failed.", ReplayLost},
		{codes.InvalidArgument, codeReplayIDValidationFailed, "", ReplayLost},
		{codes.InvalidArgument, "", "The Replay ID validation failed. rpcId: x", ReplayLost},
		{codes.InvalidArgument, "", "The topic name in a subsequent FetchRequest must match the first one.", PermanentTenant},
		{codes.NotFound, "", "The topic information for org 00D and topic /data/AccountChangeEvent not found.", PermanentTenant},
		{codes.Unimplemented, "", "", PermanentTenant},
		{codes.Unavailable, "", "HTTP/2 server reset the stream.", Retryable},
		{codes.Unavailable, "", "This application is down for maintenance", Retryable},
		{codes.DeadlineExceeded, "", "", Retryable},
		{codes.Internal, "", "", Retryable},
		{codes.Canceled, "", "", Retryable},
		{codes.ResourceExhausted, "", "grpc: received message larger than max", Retryable},
		{codes.Unknown, "sfdc.platform.eventbus.grpc.something.new", "", Retryable},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, ClassifyGRPC(c.status, c.errorCode, c.message), "%s %s %q", c.status, c.errorCode, c.message)
	}
	e := NewGRPCError("subscribe", codes.InvalidArgument, "", "The Replay ID validation failed.")
	assert.Equal(t, CodeReplayIDCorrupted, e.Code, "every refused replay id under one code")
	assert.Equal(t, ReplayLost, ClassOf(fmt.Errorf("wrapped: %w", e)))
	assert.Contains(t, e.Error(), "gRPC InvalidArgument")
	assert.Equal(t, "replay-lost", ReplayLost.String())
	assert.False(t, ReplayLost.HoldsTenant())
}
