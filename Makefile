# esjoin: `make up` runs the pipeline on the embedded endpoint, `make test` runs every test.
# Everything installs into .venv from pinned versions (pyproject.toml + constraints.txt).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# embedded (default) | localstack | emulator-container
BACKEND ?= embedded
PYTEST_ARGS ?=
# emulator-container serves the embedded endpoint's control API: the suites drive it as the embedded
# backend at its published port, and must find it there rather than start an endpoint of their own.
CONTAINER_ENDPOINT ?= http://127.0.0.1:4566
ifeq ($(BACKEND),emulator-container)
TEST_BACKEND := embedded
TEST_ENV := ESJOIN_ENDPOINT=$(CONTAINER_ENDPOINT) ESJOIN_REUSE_ENDPOINT=1
else
TEST_BACKEND := $(BACKEND)
TEST_ENV :=
endif
ifeq ($(BACKEND),localstack)
# The poll settings docker-compose.yml starts LocalStack with: the harness derives its settle time from them.
TEST_ENV := LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC=$${LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC:-0.1} \
	LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC=$${LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC:-0.5}
endif

.PHONY: help install up down status logs demo test test-unit test-emulator test-integration test-docker compose-tool aws-cli-v2 browser bench lint clean

help:
	@echo "make up                 install, start the embedded endpoint, bootstrap the stack, print outputs"
	@echo "make up BACKEND=localstack|emulator-container   the same in Docker (docker-compose.yml)"
	@echo "make demo               send the sample events and print the view rows (after make up)"
	@echo "make test               lint + unit + emulator + integration tests (what CI runs)"
	@echo "make test-integration   end-to-end suites (BACKEND=embedded|localstack|emulator-container)"
	@echo "make test-docker        LocalStack in Docker: compose profile and testcontainers (skips without an engine)"
	@echo "make bench              benchmarks: bench/results/*.json and tables"
	@echo "make down               stop what make up started (same BACKEND)"
	@echo "make logs               the endpoint's or the containers' log (same BACKEND)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/esjoin up --backend $(BACKEND)

down: $(STAMP)
	$(BIN)/esjoin down --backend $(BACKEND)

status: $(STAMP)
	$(BIN)/esjoin status --backend $(BACKEND)

logs: $(STAMP)
	$(BIN)/esjoin logs --backend $(BACKEND)

demo: $(STAMP)
	$(BIN)/esjoin send

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test-emulator: $(STAMP)
	$(BIN)/pytest tests/emulator -q $(PYTEST_ARGS)

test-integration: $(STAMP)
ifeq ($(BACKEND),emulator-container)
	@$(BIN)/python docker/healthcheck.py esjoin --url $(CONTAINER_ENDPOINT) >/dev/null || { echo "make:" \
	  "no emulator container answers at $(CONTAINER_ENDPOINT): make up BACKEND=emulator-container first" >&2; exit 2; }
endif
	$(TEST_ENV) $(BIN)/pytest tests/integration -q --esjoin-backend $(TEST_BACKEND) $(PYTEST_ARGS)

# tests/unit/test_compose_contract.py validates docker-compose.yml with a compose tool when there is
# one. CI machines have none: as root with apt-get, install Debian's docker-compose 1.29 (about 13 s
# measured, 20 packages; no Docker engine needed); otherwise that test skips and says why.
compose-tool:
	@if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing docker-compose (Debian) to validate docker-compose.yml"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q docker-compose >/dev/null || { apt-get update -q >/dev/null && \
	    apt-get install -y -q docker-compose >/dev/null; } || echo "could not install docker-compose; the compose check will skip"; \
	else echo "no compose tool and no root + apt-get to install one: the compose check will skip"; fi

# tests/emulator/test_endpoint_cli.py runs `aws logs tail` (an AWS CLI v2 command; .venv has v1) with
# Debian 12's awscli 2.9 when it is there or can be installed (root + apt-get); it skips otherwise.
aws-cli-v2:
	@if [ -x /usr/bin/aws ] && /usr/bin/aws --version 2>/dev/null | grep -q '^aws-cli/2'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-cache show awscli 2>/dev/null | grep -q '^Version: 2'; then \
	  echo "installing awscli v2 (Debian) for the aws logs tail test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q awscli >/dev/null || echo "could not install awscli; the aws logs tail test will skip"; \
	else echo "no AWS CLI v2 and no Debian package to install: the aws logs tail test will skip"; fi

# tests/integration/test_console_browser.py drives Debian's chromium with Playwright (no browser download):
# as root with apt-get, install it (about 40 s measured); otherwise those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (Debian) for the console's browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && \
	    apt-get install -y -q chromium >/dev/null; } || echo "could not install chromium; the browser tests will skip"; \
	else echo "no chromium and no root + apt-get to install it: the console's browser tests will skip"; fi

test: lint compose-tool aws-cli-v2 browser test-unit test-emulator test-integration

# Not part of `make test` (CI has no Docker engine): the LocalStack runs in Docker, compose profile and
# testcontainers path, on LOCALSTACK_IMAGE or the offline build (docker/localstack-offline/). Skips with
# a message where no engine answers.
test-docker:
	bash docker/test-docker.sh

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .esjoin .pytest_cache .ruff_cache .hypothesis
