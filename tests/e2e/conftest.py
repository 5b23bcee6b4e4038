"""End-to-end fixtures: a real kube-apiserver, etcd and kube-controller-manager on loopback,
started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import KOPF_PEERING_CRDS, REPO_ROOT, ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The control plane with our CRDs and kopf's peering CRDs applied, and a
    kube-controller-manager: garbage collection and namespace deletion as in a cluster."""
    crds = [*sorted((REPO_ROOT / "crds").glob("*.yaml")), KOPF_PEERING_CRDS]
    with ControlPlane(controller_manager=True, crds=crds) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
def operator(
    control_plane: ControlPlane, tmp_path: Path, namespace: str
) -> Iterator[OperatorProcess]:
    """The operator as a process, watching only the test's `namespace` (a fixture each test
    module defines with its own prefix)."""
    ensure_namespace(control_plane.api_client(), namespace)
    with OperatorProcess(
        control_plane.kubeconfig, tmp_path / "operator.log", namespace=namespace
    ) as process:
        yield process
