// Package pubsubapi is Salesforce's Pub/Sub API (gRPC service eventbus.v1.PubSub)
// generated from pubsub_api.proto, vendored verbatim from forcedotcom/pub-sub-api
// (commit 0ba470114fd8dac1e18a2c981efdafc87fcc69d1, CC0 1.0) so the emulator is
// wire-compatible with the real service (spec §9.2: never retype it).
// Regenerate with `make proto` at the repository root.
package pubsubapi
