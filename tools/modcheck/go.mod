module github.com/optout-sync/optout-sync/tools/modcheck

go 1.26.8
