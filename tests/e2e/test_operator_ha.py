"""HA-managed guests end to end: the operator process, kube-apiserver and pvesim over HTTPS.

PVE answers the qemu migrate POST of an HA guest with a `hamigrate` task and lets its HA
manager start the `qmigrate` (qemu-server API2/Qemu.pm migrate_vm); an `ignored` HA resource
is migrated directly (pve-ha-manager HA/Config.pm vm_is_ha_managed); a request the CRM drops
creates no task at all (HA/Manager.pm update_crm_commands).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmigrate.pve.upid import parse_upid
from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import (
    TIME_SCALE,
    create,
    get,
    items,
    scaled_policy,
    vmmigration,
    wait_cluster_decided,
)
from tests.e2e.test_operator_drains import nodedrain, wait_phase
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for

_namespaces = itertools.count()
HA_ENDPOINT = "POST /cluster/ha/resources/{sid}/migrate"
QEMU_MIGRATE = "POST /nodes/{node}/qemu/{vmid}/migrate"


@pytest.fixture
def namespace() -> str:
    return f"e2e-ha-{next(_namespaces)}"


def start_sim(tmp_path: Path, pve_version: int, guests: dict[int, Any]) -> PvesimProcess:
    """pve1..pve3; the guests (vmid: YAML `ha`) on pve1, small and on shared storage."""
    config = {
        "pve_version": pve_version,
        "shared_storages": ["ceph"],
        "nodes": [{"name": f"pve{i}", "memory_gib": 128, "cpus": 32} for i in (1, 2, 3)],
        "vms": [
            {
                "vmid": vmid,
                "name": f"vm{vmid}",
                "node": "pve1",
                "memory_gib": 2,
                "used_gib": 1,
                "dirty_mib_s": 5,
                "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 16}],
                "ha": ha,
            }
            for vmid, ha in guests.items()
        ],
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return PvesimProcess("--config", str(path), "--seed", "3", "--time-scale", str(TIME_SCALE))


def connect(api: Any, namespace: str, sim: PvesimProcess, operator: OperatorProcess) -> None:
    create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
    ready = wait_cluster_decided(api, namespace, operator)
    assert ready["status"] == "True", ready


def test_drain_moves_ha_ignored_and_plain_guests_without_the_ha_endpoint(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, 8, {100: True, 101: "ignored", 102: False}) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1"))
        status = wait_phase(api, namespace, "pve1", {"Drained", "Failed"}, operator, timeout=120)
        state = sim.state()
        children = {m["spec"]["vmid"]: m["status"] for m in items(api, namespace, "vmmigrations")}

    assert status["phase"] == "Drained", status
    assert all(where != "pve1" for where in state["placement"].values()), state["placement"]
    assert state["api_requests"].get(HA_ENDPOINT, 0) == 0
    assert state["api_requests"][QEMU_MIGRATE] == 3
    (ha_run,) = state["migrations"]["100"]  # the HA manager's qmigrate, run as the HA agent
    assert parse_upid(ha_run["upid"]).user == "root@pam"
    assert children[100]["upid"] == ha_run["upid"]  # followed from the hamigrate it answered
    (ignored_run,) = state["migrations"]["101"]  # `ignored`: a direct qmigrate of ours
    assert parse_upid(ignored_run["upid"]).user != "root@pam"
    assert children[101]["upid"] == ignored_run["upid"]


def test_ha_request_for_an_offline_target_is_reported_within_a_few_crm_rounds(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, 9, {100: True}) as sim:
        connect(api, namespace, sim, operator)
        sim.fault(node_offline="pve3")
        create(api, namespace, "vmmigrations", vmmigration("refused", 100, "pve3"))

        def first_attempt_ended() -> dict[str, Any] | None:
            status = get(api, namespace, "vmmigrations", "refused").get("status") or {}
            attempts = status.get("attempts") or []
            return attempts[0] if attempts and attempts[0].get("reason") else None

        # HA_DECISION_SECONDS (30 s, operator clock) after the hamigrate ended, not 300 s
        attempt = wait_for(
            first_attempt_ended, timeout=75, message=f"the refusal\n{operator.tail()}"
        )
        state = sim.state()

    assert attempt["reason"] == "target_offline", attempt
    assert "pve3 is not online" in attempt["decisiveLine"], attempt
    assert state["migrations"].get("100", []) == []  # the CRM dropped it: no task at all
    assert state["placement"]["100"] == "pve1"
    assert state["api_requests"].get(HA_ENDPOINT, 0) == 0
