module github.com/optout-sync/optout-sync/services/pusher

go 1.26.8

require (
	github.com/optout-sync/optout-sync/proto v0.0.0
	github.com/optout-sync/optout-sync/services/sfsandbox v0.0.0
	github.com/optout-sync/optout-sync/shared v0.0.0
)

replace github.com/optout-sync/optout-sync/proto => ../../proto

replace github.com/optout-sync/optout-sync/shared => ../../shared

replace github.com/optout-sync/optout-sync/services/sfsandbox => ../sfsandbox
