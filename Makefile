# daemonlet's build and test entry points. `make test` installs the system
# packages the integration tests need (as root, see scripts/deps.sh) and runs
# every package's tests; .ci/run runs it with skips turned into failures.

GO ?= go

.PHONY: build test lint deps image

build:
	$(GO) build -o bin/daemonlet ./cmd/daemonlet

test: deps
	$(GO) test -count=1 -timeout 15m ./...

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps:
	./scripts/deps.sh

image:
	$(GO) run ./scripts/mkimage -o bin/testimage.tar
