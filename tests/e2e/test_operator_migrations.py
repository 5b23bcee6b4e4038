"""The operator as a process, against the real kube-apiserver and pvesim over HTTPS."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxmigrate.controlplane import ControlPlane
from proxmigrate.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for
from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import TIME_SCALE, condition, create, get, scaled_policy, vmmigration

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-mig-{next(_namespaces)}"


@pytest.fixture
def operator(control_plane: ControlPlane, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log") as process:
        yield process


def test_single_migration_succeeds(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(
        "--nodes", "3", "--vms-per-node", "3", "--seed", "1", "--time-scale", str(TIME_SCALE)
    ) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        cluster = wait_for(
            lambda: (
                (c := condition(get(api, namespace, "proxmoxclusters", "lab"), "Ready"))
                and c["status"] == "True"
                and c
            ),
            timeout=30,
            message=f"ProxmoxCluster Ready\n{operator.tail()}",
        )
        assert cluster["reason"] == "Connected"
        vmid = next(int(v) for v, node in sim.state()["placement"].items() if node == "pve1")
        create(api, namespace, "vmmigrations", vmmigration("move", vmid, "pve2"))
        done = wait_for(
            lambda: (
                get(api, namespace, "vmmigrations", "move").get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                and get(api, namespace, "vmmigrations", "move")
            ),
            timeout=60,
            message=f"migration to end\n{operator.tail()}",
        )
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["upid"].startswith("UPID:pve1:")
        assert done["status"]["sourceNode"] == "pve1"
        state = sim.state()
        assert state["placement"][str(vmid)] == "pve2"
        assert len(state["migrations"][str(vmid)]) == 1
        assert 'proxmigrate_migrations_total{cluster="' in operator.metrics()
