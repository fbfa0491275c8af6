# Every module of the workspace (go.work); targets run over all of them.
MODULES    := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
PKGS       := $(addsuffix /...,$(MODULES))
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: e2e-traces test lint fmt vet staticcheck proto build demo bench-pusher bench-reconciler bench-salesforce clean

## test: every module's tests against the NATS and Redis on 127.0.0.1; scripts/test-prereqs first
## starts or installs what is missing (NATS, Redis, Chromium, the nats CLI), so it works on a fresh machine.
test:
	scripts/test-prereqs
	go test $(GOTESTFLAGS) $(PKGS)

## e2e-traces: build Jaeger, run publisher -> pusher -> sandbox, assert one trace in Jaeger's API.
e2e-traces:
	OPTOUT_E2E=1 go test -count=1 -v -run 'Jaeger' ./deploy/e2e/

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

## demo: the local stack: sandbox with seeded orgs, pusher, demo publisher (Ctrl-C stops).
demo:
	go run ./services/demo

## bin/nats-server: the nats-server release the workspace pins (shared/go.mod), built from the Go module proxy.
bin/nats-server: shared/go.mod
	@mkdir -p bin
	cd shared && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2

## bench-pusher: issue 12's pusher benchmark, each part its own process (nats-server, pusher, sandbox,
## publisher) against `nats bench` on the same server; report in bench/pusher.md (about 5 minutes).
bench-pusher: bin/nats-server
	@mkdir -p bench
	go build -o bin/pusher ./services/pusher
	go build -o bin/sfsandbox ./services/sfsandbox
	go run ./services/demo -bench bench/pusher.md -bench-bin bin

## bench-reconciler: one 2,000,000-person tenant through the reconciler, SOQL and Bulk paths; report in bench/reconciler.md.
bench-reconciler:
	@mkdir -p bench
	go run ./services/reconciler/cmd/reconbench -out bench/reconciler.md

## bench-salesforce: client against the sandbox; report in bench/salesforce.txt.
bench-salesforce:
	@mkdir -p bench
	cd shared && go test -run '^$$' -bench . -benchmem -benchtime 3x ./salesforce/ | tee ../bench/salesforce.txt

clean:
	rm -rf bin
