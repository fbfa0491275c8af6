// Package salesforce is optout-sync's client for the Salesforce REST and
// Bulk API 2.0: OAuth (client credentials, JWT bearer), describe, sObject
// Collections updates, SOQL queries, Bulk query jobs and API limits.
//
// Every failure is an *Error classified once, by Classify, into the classes
// of docs/architecture.md#failure-classes; callers branch on ClassOf(err). Every request is one
// OpenTelemetry client span named by its path template ("PATCH
// /composite/sobjects"); record ids, SOQL, emails and tokens never reach span
// names, attributes or error texts built by this package.
//
// Files: auth.go (tokens), errors.go (classification), collections.go
// (writes and retrieve), query.go (SOQL), bulk.go (Bulk 2.0), limits.go
// (allocation and metrics), describe.go, transport.go (tracing), client.go,
// pubsubauth.go (the session for the Pub/Sub client, shared/adapter/pubsub).
package salesforce
