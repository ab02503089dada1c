# daemonlet's build and test entry points. `make test` installs the system
# packages the integration tests need (as root, see scripts/deps.sh) and runs
# every package's tests; .ci/run runs it with skips turned into failures.

GO ?= go

.PHONY: build test lint deps image fuzz demo demo-down bench soak

build:
	$(GO) build -o bin/daemonlet ./cmd/daemonlet

test: deps lint
	$(GO) test -count=1 -timeout 15m ./...

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps:
	./scripts/deps.sh

image:
	$(GO) run ./scripts/mkimage -o bin/testimage.tar

# The demo, as root: a private containerd, the server, one agent and the
# examples of deploy/examples, all under one directory (scripts/demo.sh).
# DEMO_ARGS go to democtl, e.g. DEMO_ARGS="-dir /tmp/d -server-port 17443".
DEMO_ARGS ?=
demo:
	GO=$(GO) ./scripts/demo.sh $(DEMO_ARGS)

demo-down:
	GO=$(GO) ./scripts/demo-down.sh $(DEMO_ARGS)

# Each fuzz target runs for FUZZTIME; go test -fuzz takes one target at a
# time. Seed corpora live in each package's testdata.
FUZZTIME ?= 20s
FUZZ_TARGETS = \
	./api:FuzzDecodeAndValidate \
	./api:FuzzParseNodeLabels \
	./api:FuzzParseTaints \
	./api/client:FuzzDecodeWatch \
	./api/server:FuzzParseTokenFile

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Benchmarks (bench/): every figure next to its reference, measured in the
# same run; the table goes to stdout and bench/results.json.
BENCH_OUT ?= $(CURDIR)/bench/out
bench: deps
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	DAEMONLET_BENCH=1 DAEMONLET_BENCH_OUT=$(BENCH_OUT) $(GO) test -count=1 -timeout 20m -run '^TestBench' ./bench/ ./agent/ ./api/server/
	$(GO) run ./bench/report -in $(BENCH_OUT) -json bench/results.json

# The long fault loops (tests named TestSoak*), run by .ci/run after make
# test; under make test they run a few rounds only.
soak: deps
	DAEMONLET_SOAK=1 $(GO) test -count=1 -timeout 30m -run '^TestSoak' ./...
