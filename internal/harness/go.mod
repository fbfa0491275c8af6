module github.com/optout-sync/optout-sync/internal/harness

go 1.26.8
