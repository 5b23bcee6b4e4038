"""Chaos scenarios: real drains (kube-apiserver + etcd, pvesim, the operator as a process)
under Kubernetes and PVE faults, judged by pvesim's ground truth. Marker `chaos`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import KOPF_PEERING_CRDS, REPO_ROOT, ControlPlane


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: fault-injection scenarios (tests/chaos)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    """One control plane (its kube-apiserver restarted by one scenario, ready again after);
    each scenario has its own namespace."""
    with ControlPlane() as control:
        control.apply_crds([*sorted((REPO_ROOT / "crds").glob("*.yaml")), KOPF_PEERING_CRDS])
        yield control
