# sipbalancer — make targets. See README.md.
GO      ?= go
BIN     := bin
PKGS    := ./...
# Fuzzing time per target for `make fuzz`.
FUZZTIME ?= 20s

.PHONY: all build test test-short deps vet fmt-check lint demo bench bench-sipp bench-compare fuzz clean

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
# missing, then unit, fuzz-corpus and end-to-end tests with the race
# detector, then the allocation-count tests without it.
test: deps lint
	$(GO) test -race -timeout 10m $(PKGS)
	@# Allocation counts are only meaningful without the race detector
	@# (TestSignVerifyAllocs skips itself under it).
	$(GO) test -count=1 -run 'Allocs$$' ./pkg/...

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

# sipbalancer and Kamailio's dispatcher side by side (same backends, same
# sipp caller, stepped rates, repeats); installs kamailio and sipp when
# missing and run as root. Long: about 25 minutes with the defaults. Settings
# (see benchmarks/README.md) from the environment or the command line, e.g.
# make bench-compare REPEATS=1 ONLY=ours RATES="500 1000".
bench-compare: build
	@./benchmarks/bench-compare.sh

fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) .demo benchmarks/out
