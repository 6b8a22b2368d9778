# migctl: `make demo` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
GO    ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS  := ./...
# OS packages the tests and the demo need (Debian names).
DEBS  := erlang-base erlang-mnesia erlang-crypto erlang-runtime-tools rebar3 openssh-server iproute2 prometheus prometheus-alertmanager faketime
AGENT_SRC  := $(wildcard erlang/agent/*.erl)
AGENT_BEAM := $(AGENT_SRC:.erl=.beam)

.PHONY: all build deps erlang agent test test-go test-erlang bench bench-scale bench-cleanup demo lint clean release man

all: build

## deps: install what is missing (Erlang/OTP from Debian's packages)
deps:
	@missing=""; \
	for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

## erlang: the erlmcp-like fixture application (tests, demo)
erlang: deps
	@$(MAKE) -s -C erlang

## agent: migctl's node-side modules, embedded in the binary (committed)
agent: $(AGENT_BEAM)
erlang/agent/%.beam: erlang/agent/%.erl
	erlc +deterministic -Wall -o erlang/agent $<

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/migctl ./cmd/migctl

test: deps erlang build test-erlang test-go

test-erlang:
	@$(MAKE) -s -C erlang test

# MIGCTL_REQUIRE_ERLANG: an integration test fails, not skips, without
# Erlang (a bare `go test ./...` skips them and runs the pure tests).
test-go:
	$(GO) vet $(PKGS)
	MIGCTL_REQUIRE_ERLANG=1 $(GO) test -count=1 -timeout 14m $(PKGS)
	# the connection layer once more under the race detector (ergo's
	# atom cache and mailbox are where races would hide)
	MIGCTL_REQUIRE_ERLANG=1 $(GO) test -race -count=1 -timeout 5m ./erl/

## bench: migctl vs native Erlang, side by side, medians of several runs
# Every bench measures migctl and the native Erlang reference in the same run
# and prints both and the ratio (medians). BENCH_ONLY=export,rss selects the
# export benches; BENCH_N and BENCH_RUNS size them; MIGCTL_BENCH_SESSIONS,
# MIGCTL_BENCH_N size the migration and consistency benches. Full log: .bench.log
bench: deps erlang build
	@echo "== issue 2: export vs rpc:call, RSS" ; \
	$(GO) test -tags bench -count=1 -timeout 120m -v ./bench/ 2>&1 | tee .bench.log | grep -E '^(BENCH|--- FAIL|FAIL)'
	@echo "== issues 3, 4, 5: backfill, hybrid latency, phase set; consistency check; split detection and heal" ; \
	MIGCTL_BENCH=1 $(GO) test -count=1 -timeout 120m -run 'TestBench' -v ./migrate/ ./consistency/ ./internal/benchkit/ 2>&1 | tee -a .bench.log | grep -E '(_test\.go:[0-9]+:|^--- FAIL|^FAIL|^ok)'
	@MIGCTL_BENCH=1 $(GO) test -count=1 -timeout 60m -v ./cluster/clusterbench/ 2>&1 | tee -a .bench.log | grep -E '(_test\.go:[0-9]+:|^--- FAIL|^FAIL|^ok)'

## bench-scale: issue 13's big run (not part of test): BENCH_SCALE_SESSIONS (default
## 1.8M, 1.65 GB of DETS) on one node, 5-node disc_copies Mnesia, BENCH_SCALE_RATE
## ops/s (default 1000); each step's time, migctl's peak RSS, the nodes' peak memory,
## load verify. Try BENCH_SCALE_SESSIONS=100000 first; watch free -g. BENCH_SCALE_FLOOR=1
## first measures Erlang's own floor for the backfill + check (no traffic; =only: just that)
bench-scale: deps erlang build
	./bench/scale/run.sh

## bench-cleanup: erlmcp's cleanup of expired sessions inside the store server vs the
## hybrid's cleaner, one node, BENCH_CLEANUP_SESSIONS (default 1.4M, ~1.8 GB of DETS):
## the clients' errors and longest call under BENCH_CLEANUP_RATE ops/s (not part of test)
bench-cleanup: deps erlang build
	./bench/scale/cleanup.sh

## demo: the whole story on one machine: a 3-node cluster with live traffic migrated
## DETS -> Mnesia, checked, split, healed; a final report with 0 lost writes; stops all it started
demo: deps erlang build
	./scripts/demo.sh

## release: static binaries for linux/amd64 and linux/arm64, version stamped, and the
## node-side library (migctl_node: sources and compiled ebin) for erlmcp releases, with checksums
release: erlang
	@mkdir -p dist
	@for arch in amd64 arm64; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/migctl-$(VERSION)-linux-$$arch ./cmd/migctl || exit 1; \
	done
	@tar -czf dist/migctl_node-$(VERSION).tar.gz -C erlang migctl_node/README.md migctl_node/rebar.config migctl_node/src migctl_node/ebin
	@cd dist && sha256sum migctl-$(VERSION)-linux-* migctl_node-$(VERSION).tar.gz > SHA256SUMS && cat SHA256SUMS

## man: man pages from the cobra commands (completions: migctl completion bash|zsh|fish)
man:
	@rm -rf docs/man
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(GO) run -ldflags '-X main.version=$(VERSION)' ./cmd/migctl docs man --dir docs/man

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin
	$(MAKE) -s -C erlang clean
