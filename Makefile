# The modules of the workspace (go.work): the root module, proto and the
# emulator (services/sfsandbox); targets run over all three. deploy/deploytest
# and deploy/jaeger stay outside go.work and have targets of their own.
MODULES    := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
PKGS       := $(addsuffix /...,$(MODULES))
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: help e2e-traces test test-short lint fmt vet staticcheck proto build demo bench-pusher bench-reconciler bench-salesforce clean

## help: every target with what it does (the `## target:` comments of this file).
help:
	@awk '/^## [a-zA-Z0-9_\/.-]+:/ { sub(/^## /, ""); name = $$0; sub(/:.*/, "", name); desc = $$0; sub(/^[^:]*: */, "", desc); \
		printf "\n  %-18s %s\n", name, desc; cont = 1; next } \
		cont && /^## / { sub(/^## /, ""); printf "  %-18s %s\n", "", $$0; next } { cont = 0 }' $(MAKEFILE_LIST)

# The NATS server tests run against: the current release, built from the
# version the root go.mod pins (not the distribution's, which lags years behind),
# on its own port so a machine's NATS on 4222 is left alone.
NATS_TEST_URL := nats://127.0.0.1:4322

## test: every module's tests against the NATS (bin/nats-server on 127.0.0.1:4322) and Redis on
## 127.0.0.1; scripts/test-prereqs first builds, starts or installs what is missing (NATS, Redis,
## Chromium, the nats CLI), so it works on a fresh machine.
test: bin/nats-server
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) go test $(GOTESTFLAGS) $(PKGS)

## test-short: the fast tier: every module's tests that need no NATS, Redis or Chromium (go test
## -short; the tests that need one skip, saying which). Every server address points at a closed port
## (127.0.0.1:1), so a test that would reach one fails rather than passes by luck of what runs.
## Without the race detector, which doubles its time on 2 cores (45 s instead of 83 s here): make test
## runs every test with it.
test-short:
	NATS_URL=nats://127.0.0.1:1 REDIS_ADDR=127.0.0.1:1 CHROMIUM=/nonexistent/chromium \
		go test -short -count=1 -timeout 5m $(PKGS)

## bin/nats-server: the nats-server version the root go.mod pins, from the Go module proxy.
## Rebuilt when a go.mod of the workspace changes, since any could raise the version it resolves
## to (tests and the cluster test run this binary).
bin/nats-server: go.work $(addsuffix /go.mod,$(MODULES))
	@mkdir -p bin
	go build -trimpath -o bin/nats-server github.com/nats-io/nats-server/v2

## e2e-traces: build Jaeger, run publisher -> pusher -> sandbox, assert one trace in Jaeger's API
## (on the same NATS as make test). Jaeger's first build takes minutes on 2 cores (more under load),
## hence its own timeout beyond go test's default 10 minutes.
e2e-traces: bin/nats-server
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) OPTOUT_E2E=1 go test -count=1 -timeout 30m -v -run 'Jaeger' ./deploy/e2e/


## test-cluster: a 3-node JetStream cluster of separate nats-server processes on loopback (file
## storage, sync_interval: always, R3), two pusher processes, a burst of 20,000 opt-outs and
## resubscribes while the leaders of the events stream and the ledger and one pusher are killed;
## then a reconcile run across a Redis restart. Minutes; needs redis-server (not a running Redis).
.PHONY: test-cluster
test-cluster: bin/nats-server
	OPTOUT_CLUSTER=1 OPTOUT_NATS_SERVER=$(CURDIR)/bin/nats-server go test -count=1 -v -timeout 15m ./deploy/clustertest/

# promtool checks the chart's PrometheusRule. Prometheus's module is far too large a dependency
# for any go.mod of ours, so it is built from the Go module proxy at its own go.mod's versions.
PROMTOOL_VERSION := v0.316.0
PROMTOOL         := bin/promtool-$(PROMTOOL_VERSION)

## test-deploy: the Helm chart, the Tiltfile and the Dockerfiles, checked without Docker or a cluster;
## the chart's alerts with promtool (check rules, rule unit tests). Its own module (Helm and
## Kubernetes dependencies stay out of go.work).
.PHONY: test-deploy
test-deploy: $(PROMTOOL)
	cd deploy/deploytest && PROMTOOL=$(CURDIR)/$(PROMTOOL) GOWORK=off go test ./...

## bin/promtool-VERSION: Prometheus's promtool at PROMTOOL_VERSION, from the Go module proxy
## (`go install …/cmd/promtool@version`), without the service discoveries (`-tags remove_all_sd`,
## Prometheus's own build tag): checking and unit-testing rules needs none, and the cloud SDKs they
## pull in were most of a cold build: 200 s of CPU and 5.5 minutes here with an empty build cache
## (457 s of CPU and 17 minutes with them), seconds once cached.
$(PROMTOOL):
	@mkdir -p bin/.promtool
	GOWORK=off GOBIN=$(CURDIR)/bin/.promtool go install -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)
	mv bin/.promtool/promtool $@

## test-jsforce: drive the Salesforce emulator with jsforce (npm; needs node), failing if node is missing.
.PHONY: test-jsforce
test-jsforce:
	cd services/sfsandbox && OPTOUT_REQUIRE_JSFORCE=1 go test -count=1 -run '^TestJSForce$$' .

## lint: gofmt, go vet and staticcheck over every module, the package boundaries (modcheck), and the
## generated docs (docs-check).
lint: fmt vet staticcheck modcheck docs-check

## docs: regenerate docs/configuration.md from the services' config loaders (tools/configdoc) and
## docs/optoutctl/, optoutctl's command reference, from its command tree (cobra/doc).
.PHONY: docs docs-check
docs:
	go run ./tools/configdoc -out docs/configuration.md
	go run ./services/optoutctl/internal/gendocs -out docs/optoutctl

## docs-check: fail when docs/configuration.md differs from what the config loaders read, or
## docs/optoutctl/ from optoutctl's commands and flags (run make docs).
docs-check:
	go run ./tools/configdoc -check docs/configuration.md
	go run ./services/optoutctl/internal/gendocs -check docs/optoutctl

## fmt: fail when gofmt would change a file (generated .pb.go aside).
fmt:
	@out=$$(git ls-files '*.go' | grep -v '\.pb\.go$$' | xargs gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## vet: go vet over every module of go.work.
vet:
	go vet $(PKGS)

## staticcheck: staticcheck (the pinned version) over every module of go.work.
staticcheck:
	$(STATICCHECK) $(PKGS)

## modcheck: the package boundaries inside the module: shared depends on no service, the emulator
## on nothing of ours, no service on another (tools/modcheck; its own tests run first so a broken
## checker cannot pass silently).
.PHONY: modcheck
modcheck:
	go test -count=1 ./tools/modcheck/ && go run ./tools/modcheck -root .

## proto: regenerate Go code from proto/ with the pinned protoc-gen-go (proto/go.mod tool), and
## Salesforce's Pub/Sub API, vendored once in services/sfsandbox/pubsubapi, twice with the plugins the
## sandbox's go.mod pins: the sandbox's copy, and the client's (shared/adapter/pubsub/pubsubapi).
proto:
	cd proto && go build -o ../bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --go_out=proto --go_opt=paths=source_relative -Iproto optout/v1/optout.proto
	@# Salesforce's pubsub_api.proto stays verbatim: its go_package (Salesforce's repository) is
	@# overridden with M so the generated package lives in the sandbox module, which imports nothing of ours.
	cd services/sfsandbox && go build -o ../../bin/sfsandbox-protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
		&& go build -o ../../bin/sfsandbox-protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=bin/sfsandbox-protoc-gen-go --plugin=protoc-gen-go-grpc=bin/sfsandbox-protoc-gen-go-grpc \
		--go_out=services/sfsandbox/pubsubapi --go_opt=paths=source_relative \
		'--go_opt=Mpubsub_api.proto=github.com/optout-sync/optout-sync/services/sfsandbox/pubsubapi;pubsubapi' \
		--go-grpc_out=services/sfsandbox/pubsubapi --go-grpc_opt=paths=source_relative \
		'--go-grpc_opt=Mpubsub_api.proto=github.com/optout-sync/optout-sync/services/sfsandbox/pubsubapi;pubsubapi' \
		-Iservices/sfsandbox/pubsubapi pubsub_api.proto
	@# The client's copy (shared/adapter/pubsub/pubsubapi, root module) from the same verbatim file and
	@# the same plugins: shared may not import the sandbox's copy, and one .proto cannot drift from another.
	protoc --plugin=protoc-gen-go=bin/sfsandbox-protoc-gen-go --plugin=protoc-gen-go-grpc=bin/sfsandbox-protoc-gen-go-grpc \
		--go_out=shared/adapter/pubsub/pubsubapi --go_opt=paths=source_relative \
		'--go_opt=Mpubsub_api.proto=github.com/optout-sync/optout-sync/shared/adapter/pubsub/pubsubapi;pubsubapi' \
		--go-grpc_out=shared/adapter/pubsub/pubsubapi --go-grpc_opt=paths=source_relative \
		'--go-grpc_opt=Mpubsub_api.proto=github.com/optout-sync/optout-sync/shared/adapter/pubsub/pubsubapi;pubsubapi' \
		-Iservices/sfsandbox/pubsubapi pubsub_api.proto

## build: every service binary into bin/.
build:
	@mkdir -p bin
	@for d in services/*/; do \
		if [ -f $$d/main.go ]; then echo "build $$d"; go build -trimpath -o bin/$$(basename $$d) ./$$d || exit 1; fi; \
	done

## demo: the local stack: sandbox with seeded orgs, pusher, admin page (prints its URL and how to sign in),
## demo publisher; the progress line adds up to what was published (Ctrl-C stops).
demo:
	go run ./services/demo

## bench-pusher: issue 12's pusher benchmark (bench/pusher), each part its own process (nats-server,
## pusher, sandbox, publisher) against `nats bench` on the same server; report in bench/pusher.md
## (about 5 minutes). BENCH_FLAGS adds flags (go run ./bench/pusher -h lists them).
bench-pusher: bin/nats-server
	@mkdir -p bench
	go build -o bin/pusher ./services/pusher
	go build -o bin/sfsandbox ./services/sfsandbox
	go run ./bench/pusher -out bench/pusher.md -bin bin $(BENCH_FLAGS)

## chaos: the model run of the push (bench/chaos: random histories through two pusher replicas, one
## killed mid-batch, against faults, compared with the reference model) at CHAOS_PERSONS persons
## (100,000; make test runs it at 1,000 as bench/chaos's test); report in CHAOS_REPORT (bench/chaos.md:
## lost, reverted, double effects, all expected 0). CHAOS_SEED replays a run's histories (the run logs
## its seed). A quick look: make chaos CHAOS_PERSONS=2000 CHAOS_REPORT=/tmp/chaos.md
## It fails when the run does (the full log, with the services' JSON lines, is bin/chaos.log).
CHAOS_PERSONS ?= 100000
CHAOS_REPORT  ?= $(CURDIR)/bench/chaos.md
CHAOS_SEED    ?=
.PHONY: chaos
chaos: bin/nats-server
	@mkdir -p bench
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) go run ./bench/chaos -persons $(CHAOS_PERSONS) -out $(abspath $(CHAOS_REPORT)) \
		$(if $(CHAOS_SEED),-seed $(CHAOS_SEED)) > bin/chaos.log 2>&1; \
		rc=$$?; grep -v '"level"' bin/chaos.log; exit $$rc

## bench-reconciler: one 2,000,000-person tenant through the reconciler (bench/reconciler), SOQL and
## Bulk paths; report in bench/reconciler.md. BENCH_FLAGS adds flags (-persons 20000 for a quick run).
bench-reconciler: bin/nats-server
	@mkdir -p bench
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) go run ./bench/reconciler -out bench/reconciler.md $(BENCH_FLAGS)

## bench-salesforce: client against the sandbox; report in bench/salesforce.txt.
bench-salesforce:
	@mkdir -p bench
	go test -run '^$$' -bench . -benchmem -benchtime 3x ./shared/adapter/salesforce/ | tee bench/salesforce.txt

## clean: remove bin/.
clean:
	rm -rf bin
