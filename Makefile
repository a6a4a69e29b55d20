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

.PHONY: help install up down status logs demo test test-unit test-emulator test-integration bench lint clean

help:
	@echo "make up                 install, start the embedded endpoint, bootstrap the stack, print outputs"
	@echo "make demo               send the sample events and print the view rows (after make up)"
	@echo "make test               lint + unit + emulator + integration tests (what CI runs)"
	@echo "make test-integration   end-to-end suites (BACKEND=embedded|localstack)"
	@echo "make bench              benchmarks: bench/results/*.json and tables"
	@echo "make down               stop what make up started"

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

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test-emulator: $(STAMP)
	$(BIN)/pytest tests/emulator -q $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -q --backend $(BACKEND) $(PYTEST_ARGS)

test: lint test-unit test-emulator test-integration

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .esjoin .pytest_cache .ruff_cache .hypothesis
