# daemonlet's build and test entry points. `make test` installs the system
# packages the integration tests need (as root, see scripts/deps.sh) and runs
# every package's tests; .ci/run runs it with skips turned into failures.

GO ?= go

.PHONY: build test lint deps image fuzz

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
