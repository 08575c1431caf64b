# deskmail — `make help` lists the targets. The two a newcomer needs: `make run`, `make test`.
SHELL := /bin/bash
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

# Where cargo puts the debug binaries (CARGO_TARGET_DIR moves them).
BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/debug

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-9s %s\n", $$1, $$2}'

services: ## Install (apt-get, as root) and start what is missing: RabbitMQ, PostgreSQL, Dovecot, Postfix, test clients
	@scripts/ensure-services.sh

build: ## Build every daemon and deskmailctl
	$(CARGO) build --workspace --bins

run: services build ## Start the whole system on the embedded defaults (Ctrl-C stops it)
	@BIN=$(BIN_DIR) scripts/run.sh

demo: services build ## The round trip by itself: customer mail -> ticket -> auto-reply -> reply -> follow-up
	@BIN=$(BIN_DIR) scripts/demo.sh

deploy-check: build ## Validate deploy/ (systemd-analyze verify, compose config, Kubernetes schemas, daemon configs)
	REQUIRE_BINARIES=1 DESKMAIL_BIN_DIR=$(BIN_DIR) scripts/validate-deploy.sh

test: services ## Run every test against real services
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --locked --no-fail-fast
else
	$(CARGO) test --workspace --locked --no-fail-fast
endif

bench: services ## Measure throughput (prints figures next to the peers measured in the same run)
	$(CARGO) bench -p deskmail-mq --bench throughput
	$(CARGO) bench -p deskmail-configd --bench grpc
	$(CARGO) bench -p deskmail-fetcher --bench drain
	$(CARGO) bench -p deskmail-mailparse --bench parse
	$(CARGO) bench -p deskmail-router --bench route
	$(CARGO) bench -p deskmail-sender --bench send
	$(CARGO) bench -p deskmail-telemetry --bench record
	$(CARGO) build --release --bins
	$(CARGO) bench -p deskmail-e2e --bench pipeline

fuzz: services ## Ten minutes of mutated corpus mails through parse (mailparse) and parse-and-dispatch (router)
	DESKMAIL_FUZZ_SECS=600 $(CARGO) test -p deskmail-mailparse --test mailparse -- fuzz --nocapture
	PROPTEST_CASES=20000 $(CARGO) test -p deskmail-router --test router -- fuzz --nocapture

soak: services build ## The long fault run: 5,000 mails, 20 random faults, configd down a minute
	E2E_MAILS=5000 E2E_FAULTS=20 E2E_CONFIGD_DOWN_SECS=60 $(CARGO) test -p deskmail-e2e --test e2e -- faults --nocapture

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## Formatting check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

ci: lint test ## What CI runs

.PHONY: help services build run demo deploy-check test bench soak fuzz fmt lint ci
