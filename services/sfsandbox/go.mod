module github.com/optout-sync/optout-sync/services/sfsandbox

go 1.26.8
