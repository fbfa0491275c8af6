module github.com/optout-sync/optout-sync/internal/refmodel

go 1.26.8
