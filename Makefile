# proxmigrate: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv provision lint format typecheck test unit e2e demo demo-rolling bench bench-quick clean

help:
	@echo "make demo    drain a node of a simulated Proxmox cluster with a local control plane"
	@echo "make demo-rolling  rolling maintenance of every node of that cluster, guests return home"
	@echo "make test    lint, type-check and run every test (unit + e2e)"
	@echo "make lint | typecheck | unit | e2e | bench | bench-quick | clean"

# hack/provision.py builds (once, into ~/.cache/proxmigrate) only what each target runs and
# installs the virtualenv (hack/venv.sh; pip's output in .venv/pip.log) beside the builds:
# pip waits on the network, the builds on the CPU. `make provision` builds everything.
PROVISION := $(PYTHON) hack/provision.py for
DEV_VENV := --venv $(VENV) --dev

$(STAMP): pyproject.toml
	@$(PROVISION) $(DEV_VENV)

venv: $(STAMP)

provision:
	@$(PROVISION) demo unit e2e bench $(DEV_VENV)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

unit:
	@$(PROVISION) unit $(DEV_VENV)
	$(VENV)/bin/pytest -q tests/unit

e2e:
	@$(PROVISION) e2e $(DEV_VENV)
	$(VENV)/bin/pytest -q -m e2e tests/e2e

test:
	@$(PROVISION) unit e2e $(DEV_VENV)
	@$(MAKE) --no-print-directory lint typecheck
	$(VENV)/bin/pytest -q tests

# The demo needs only the runtime dependencies (a virtualenv with the dev dependencies has
# them too); then demo.py says what will happen and how long, and runs it.
demo:
	@$(PROVISION) demo --venv $(VENV) \
	  --say "make demo: the operator will drain a node of a simulated Proxmox VE cluster; first it sets up what that needs, once:"
	@$(PY) hack/demo.py

# A rolling maintenance of the same cluster (NodeMaintenance, return home); same provisioning.
demo-rolling:
	@$(PROVISION) demo --venv $(VENV) \
	  --say "make demo-rolling: the operator will maintain every node of a simulated Proxmox VE cluster in turn; first it sets up what that needs, once:"
	@$(PY) hack/demo_rolling.py

bench:
	@$(PROVISION) bench $(DEV_VENV)
	$(PY) -m bench

# The quick subset runs pvesim in-process: no control plane, no real sshd.
bench-quick:
	@$(PROVISION) bench-quick $(DEV_VENV)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
