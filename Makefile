# sipbalancer — make targets. See README.md.
GO      ?= go
BIN     := bin
PKGS    := ./...
# Fuzzing time per target for `make fuzz`.
FUZZTIME ?= 20s

.PHONY: all build test test-short deps vet fmt-check lint demo bench bench-sipp fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	@./scripts/deps.sh

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

lint: fmt-check vet

# The whole suite, as CI runs it: installs redis-server and sipp when
# missing, then unit, fuzz-corpus and end-to-end tests (with the race
# detector on the packages that are not load tests).
test: deps lint
	$(GO) test -race -timeout 10m $(PKGS)

test-short: lint
	$(GO) test -short -timeout 5m $(PKGS)

# Three emulated FreeSWITCH nodes, the balancer and a burst of calls on
# loopback; one node is killed midway.
demo: build
	@./scripts/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./pkg/...

bench-sipp: build deps
	@./benchmarks/run-sipp.sh

fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) .demo benchmarks/out
