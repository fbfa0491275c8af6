# Every module of the workspace (go.work); targets run over all of them.
MODULES    := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
PKGS       := $(addsuffix /...,$(MODULES))
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: e2e-traces test lint fmt vet staticcheck proto build demo bench-pusher bench-reconciler bench-salesforce clean

# The NATS server tests run against: the current release, built from the
# version shared/go.mod pins (not the distribution's, which lags years behind),
# on its own port so a machine's NATS on 4222 is left alone.
NATS_TEST_URL := nats://127.0.0.1:4322

## test: every module's tests against the NATS (bin/nats-server on 127.0.0.1:4322) and Redis on
## 127.0.0.1; scripts/test-prereqs first builds, starts or installs what is missing (NATS, Redis,
## Chromium, the nats CLI), so it works on a fresh machine.
test: bin/nats-server
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) go test $(GOTESTFLAGS) $(PKGS)

## bin/nats-server: the nats-server version shared/go.mod pins, from the Go module proxy.
## Rebuilt when a go.mod of the workspace changes, since any could raise the version it resolves
## to (tests and the cluster test run this binary).
bin/nats-server: go.work $(addsuffix /go.mod,$(MODULES))
	@mkdir -p bin
	cd shared && go build -trimpath -o ../bin/nats-server github.com/nats-io/nats-server/v2

## e2e-traces: build Jaeger, run publisher -> pusher -> sandbox, assert one trace in Jaeger's API
## (on the same NATS as make test).
e2e-traces: bin/nats-server
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) OPTOUT_E2E=1 go test -count=1 -v -run 'Jaeger' ./deploy/e2e/


## test-cluster: a 3-node JetStream cluster of separate nats-server processes on loopback (file
## storage, sync_interval: always, R3), two pusher processes, a burst of 20,000 opt-outs and
## resubscribes while the leaders of the events stream and the ledger and one pusher are killed;
## then a reconcile run across a Redis restart. Minutes; needs redis-server (not a running Redis).
.PHONY: test-cluster
test-cluster: bin/nats-server
	OPTOUT_CLUSTER=1 OPTOUT_NATS_SERVER=$(CURDIR)/bin/nats-server go test -count=1 -v -timeout 15m ./deploy/clustertest/

## test-deploy: the Helm chart, the Tiltfile and the Dockerfiles, checked without Docker or a cluster.
## Its own module (Helm and Kubernetes dependencies stay out of go.work).
.PHONY: test-deploy
test-deploy:
	cd deploy/deploytest && GOWORK=off go test ./...

## test-jsforce: drive the Salesforce emulator with jsforce (npm; needs node), failing if node is missing.
.PHONY: test-jsforce
test-jsforce:
	cd services/sfsandbox && OPTOUT_REQUIRE_JSFORCE=1 go test -count=1 -run '^TestJSForce$$' .

## lint: gofmt, go vet and staticcheck over every module, and the module boundaries.
lint: fmt vet staticcheck modcheck

fmt:
	@out=$$(git ls-files '*.go' | grep -v '\.pb\.go$$' | xargs gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	go vet $(PKGS)
	cd tools/modcheck && GOWORK=off go vet ./...

staticcheck:
	$(STATICCHECK) $(PKGS)
	cd tools/modcheck && GOWORK=off $(STATICCHECK) ./...

## modcheck: shared depends on no service, the emulator on nothing of ours, the
## pusher and the reconciler not on each other (tools/modcheck, outside go.work;
## its own tests run first so a broken checker cannot pass silently).
.PHONY: modcheck
modcheck:
	cd tools/modcheck && GOWORK=off go test -count=1 ./... && GOWORK=off go run . -root ../..

## proto: regenerate Go code from proto/ with the pinned protoc-gen-go (proto/go.mod tool).
proto:
	cd proto && go build -o ../bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --go_out=proto --go_opt=paths=source_relative -Iproto optout/v1/optout.proto

## build: every service binary into bin/.
build:
	@mkdir -p bin
	@for d in services/*/; do \
		if [ -f $$d/main.go ]; then echo "build $$d"; (cd $$d && go build -trimpath -o ../../bin/$$(basename $$d) .) || exit 1; fi; \
	done

## demo: the local stack: sandbox with seeded orgs, pusher, admin page (prints its URL and how to sign in),
## demo publisher; the progress line adds up to what was published (Ctrl-C stops).
demo:
	go run ./services/demo

## bench-pusher: issue 12's pusher benchmark, each part its own process (nats-server, pusher, sandbox,
## publisher) against `nats bench` on the same server; report in bench/pusher.md (about 5 minutes).
bench-pusher: bin/nats-server
	@mkdir -p bench
	go build -o bin/pusher ./services/pusher
	go build -o bin/sfsandbox ./services/sfsandbox
	go run ./services/demo -bench bench/pusher.md -bench-bin bin

## chaos: the model-based randomized test of the push at 100,000 persons (make test runs it at 1,000);
## report in bench/chaos.md (lost, reverted, double effects: all expected 0). OPTOUT_MODEL_SEED replays a run.
.PHONY: chaos
chaos: bin/nats-server
	@mkdir -p bench
	scripts/test-prereqs
	cd services/pusher && NATS_URL=$(NATS_TEST_URL) OPTOUT_MODEL_PERSONS=100000 OPTOUT_MODEL_REPORT=$(CURDIR)/bench/chaos.md \
		go test -count=1 -timeout 60m -run '^TestModelRandomHistoriesThroughTwoReplicas$$' -v ./push/ | grep -v '"level"'

## bench-reconciler: one 2,000,000-person tenant through the reconciler, SOQL and Bulk paths; report in bench/reconciler.md.
bench-reconciler: bin/nats-server
	@mkdir -p bench
	scripts/test-prereqs
	NATS_URL=$(NATS_TEST_URL) go run ./services/reconciler/cmd/reconbench -out bench/reconciler.md

## bench-salesforce: client against the sandbox; report in bench/salesforce.txt.
bench-salesforce:
	@mkdir -p bench
	cd shared && go test -run '^$$' -bench . -benchmem -benchtime 3x ./salesforce/ | tee ../bench/salesforce.txt

clean:
	rm -rf bin
