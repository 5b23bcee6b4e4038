# proxmigrate: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime-installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv provision lint format typecheck test unit e2e demo bench bench-quick clean

help:
	@echo "make demo    drain a node of a simulated Proxmox cluster with a local control plane"
	@echo "make test    lint, type-check and run every test (unit + e2e)"
	@echo "make lint | typecheck | unit | e2e | bench | bench-quick | clean"

# hack/venv.sh says what it installs in one line; pip's output goes to .venv/pip.log.
$(STAMP): pyproject.toml
	@PYTHON=$(PYTHON) bash hack/venv.sh $(VENV) '.[dev]' \
	  "the Python dependencies of the tests and linters" "2 min"
	@touch $@ $(RUNTIME_STAMP)

venv: $(STAMP)

# hack/provision.py builds (once, into ~/.cache/proxmigrate) only what each target runs;
# `make provision` builds everything.
PROVISION := $(PY) hack/provision.py for

provision: venv
	@$(PROVISION) demo unit e2e bench

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	@$(PROVISION) unit
	$(VENV)/bin/pytest -q tests/unit

e2e: venv
	@$(PROVISION) e2e
	$(VENV)/bin/pytest -q -m e2e tests/e2e

test: lint typecheck
	@$(PROVISION) unit e2e
	$(VENV)/bin/pytest -q tests

# The demo needs only the runtime dependencies, installed while the control plane builds
# (hack/provision.py; a virtualenv with the dev dependencies has them too); then demo.py
# says what will happen and how long, and runs it.
demo:
	@$(PYTHON) hack/provision.py for demo --venv $(VENV) \
	  --say "make demo: the operator will drain a node of a simulated Proxmox VE cluster; first it sets up what that needs, once:"
	@$(PY) hack/demo.py

bench: venv
	@$(PROVISION) bench
	$(PY) -m bench

bench-quick: venv
	@$(PROVISION) bench
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
