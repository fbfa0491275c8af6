module github.com/optout-sync/optout-sync/tools/configdoc

go 1.26.8

require (
	github.com/optout-sync/optout-sync/services/pusher v0.0.0
	github.com/optout-sync/optout-sync/services/reconciler v0.0.0
	github.com/optout-sync/optout-sync/shared v0.0.0
)
