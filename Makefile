# proxmigrate: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv provision lint format typecheck test unit e2e demo bench bench-quick clean

help:
	@echo "make demo    drain a node of a simulated Proxmox cluster with a local control plane"
	@echo "make test    lint, type-check and run every test (unit + e2e)"
	@echo "make lint | typecheck | unit | e2e | bench | bench-quick | clean"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

provision: venv
	PYTHON=$(PY) bash hack/fetch-pve-schema.sh
	bash hack/build-control-plane.sh
	bash hack/build-tools.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q tests/unit

e2e: provision
	$(VENV)/bin/pytest -q -m e2e tests/e2e

test: provision lint typecheck
	$(VENV)/bin/pytest -q tests

demo: provision
	$(PY) hack/demo.py

bench: provision
	$(PY) -m bench

bench-quick: provision
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
