# epost build and test entry points. `make test` is what CI runs.
GO       ?= go
FUZZTIME ?= 60s
# Debian packages the end-to-end tests need beyond Go, installed when missing.
TOOLS    ?= python3 swaks isync chromium

.PHONY: all build test tools vet fmt-check fuzz bench soak walkthrough demo clean

all: build

build:
	$(GO) build -o bin/epost ./cmd/epost

# The whole suite: vet, formatting, and every test with the race detector.
# Kept under 10 minutes on 2 cores; long runs belong in `soak` and `bench`.
test: tools vet fmt-check
	$(GO) test -race -timeout 15m ./...

tools:
	@./scripts/ensure-tools.sh $(TOOLS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Runs every fuzz target for FUZZTIME each and writes a summary table to
# fuzz-out/fuzz-report.txt; crashers land in testdata/fuzz
# and become regression tests.
fuzz:
	@./scripts/fuzz-all.sh $(FUZZTIME)

# Simulator engine and codec benchmarks, the store's durable put rate
# (with and without group commit), then the mail comparison with
# Postfix + Dovecot and the simulator's scale runs (results and tables in
# bench/results/, see BENCHMARKS.md). Takes about an hour on 2 cores.
bench:
	$(GO) test -run=none -bench=. -benchtime=1x ./internal/sim/
	$(GO) test -run='^$$' -bench=DurablePut -benchtime=3s -count=3 ./internal/store/
	$(GO) run ./cmd/epost sim ping --nodes 10000 --seconds 30
	$(GO) run ./cmd/epost sim ping --nodes 50000 --seconds 30
	./bench/mail.sh
	./bench/sim-scale.sh

# Long simulations that would slow `make test` down.
soak:
	$(GO) test -race -count=3 -timeout 60m ./internal/sim/
	$(GO) run ./cmd/epost sim ping --nodes 50000 --seconds 300 --loss 0.01
	# 8 `epost node` processes under mail load, SIGKILLs and a partition;
	# SOAK_DURATION (default 5m) and SOAK_SEED (to replay a run) tune it.
	SOAK_DURATION=$${SOAK_DURATION:-5m} $(GO) test -race -run '^TestSoak$$' -count=1 -v -timeout 60m ./cmd/epost/

# The README's community walk-through on loopback: a CA, three `epost node`
# processes, mail both ways with python3, a revocation and a key rotation.
# About four minutes; not part of `test`.
walkthrough:
	./scripts/walkthrough.sh

demo: build
	./bin/epost demo

clean:
	rm -rf bin
