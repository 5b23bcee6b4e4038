"""Shared test set-up: import packages live under operator/ (see docs/architecture.md)."""

import sys
from pathlib import Path

OPERATOR_DIR = Path(__file__).resolve().parents[1] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))


def pytest_sessionstart(session: object) -> None:
    """pvesim validates requests against PVE's API schema, fetched at provisioning time
    (hack/provision.py); fetch it here too so `pytest` alone works on a fresh machine."""
    from tests.support.controlplane import tool

    tool("pve-api-schema")
