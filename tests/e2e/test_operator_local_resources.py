"""NodeDrain `localDisks` and passthrough guests end to end: the operator learns local disks and
devices from the precondition check of pvesim over HTTPS (as from a real PVE), not from
`/cluster/resources`, which carries neither."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.operator_env import condition, create, items
from tests.e2e.test_operator_drains import connect, node, nodedrain, start_sim, vm, wait_phase
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess

CHECK = "GET /nodes/{node}/qemu/{vmid}/migrate"
LOCAL_DISK = [{"storage": "ceph", "size_gib": 8}, {"storage": "local-lvm", "size_gib": 4}]

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-local-{next(_namespaces)}"


def guests(node_name: str, first: int) -> list[dict[str, Any]]:
    """A plain guest, one with an attached disk on local-lvm, one with a PCI passthrough."""
    return [
        vm(first, node_name, 1),
        vm(first + 1, node_name, 1, disks=LOCAL_DISK),
        vm(first + 2, node_name, 1, local_devices=["hostpci0"]),
    ]


def cluster() -> dict[str, Any]:
    """pve1-pve3 are drained at once (`skip`, `fail`, `migrate`); pve4 takes the guests."""
    return {
        "pve_version": 9,
        "nodes": [node("pve1", 32), node("pve2", 32), node("pve3", 32), node("pve4", 64)],
        "vms": [*guests("pve1", 101), *guests("pve2", 201), *guests("pve3", 301)],
    }


def by_vmid(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(entry["vmid"]): entry for entry in status["vms"]}


def test_local_disks_and_passthrough_are_handled_as_the_crd_says(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, cluster()) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("skip", "pve1", allowPartial=True))
        create(api, namespace, "nodedrains", nodedrain("fail", "pve2", localDisks="fail"))
        create(
            api,
            namespace,
            "nodedrains",
            nodedrain("copy", "pve3", localDisks="migrate", allowPartial=True),
        )
        skipped = wait_phase(api, namespace, "skip", {"Drained", "Failed"}, operator)
        copied = wait_phase(api, namespace, "copy", {"Drained", "Failed"}, operator)
        blocked = wait_phase(api, namespace, "fail", {"Blocked"}, operator)
        state = sim.state()
        children = {c["spec"]["vmid"]: c for c in items(api, namespace, "vmmigrations")}

    placement = state["placement"]
    # localDisks: skip: the local-disk guest stays, Skipped (not Failed); passthrough unplaceable
    assert skipped["phase"] == "Drained", skipped.get("conditions")
    entries = by_vmid(skipped)
    assert (skipped["migrated"], skipped["failed"], skipped["skipped"]) == (1, 0, 2)
    assert entries[101]["phase"] == "Migrated" and placement["101"] == "pve4"
    assert entries[102]["phase"] == "Skipped"
    assert entries[102]["reason"] == "has local disks (local-lvm:vm-102-disk-1) (localDisks: skip)"
    assert entries[103]["phase"] == "Skipped"
    assert entries[103]["reason"] == "unplaceable: uses local devices (hostpci0): PVE refuses"
    assert placement["102"] == placement["103"] == "pve1"
    degraded = condition({"status": skipped}, "Degraded")
    assert degraded["reason"] == "PartialPlan" and "103" in degraded["message"]

    # localDisks: fail: the drain is blocked before anything moves
    reason = condition({"status": blocked}, "Degraded")
    assert reason["reason"] == "InsufficientCapacity"
    message = reason["message"]
    assert "202 (vm202): has local disks (local-lvm:vm-202-disk-1); localDisks is fail" in message
    assert "203 (vm203): uses local devices (hostpci0)" in message
    assert all(placement[str(vmid)] == "pve2" for vmid in (201, 202, 203))

    # localDisks: migrate: the local disk is copied (sent with with-local-disks)
    assert copied["phase"] == "Drained", copied.get("conditions")
    entries = by_vmid(copied)
    assert entries[301]["phase"] == entries[302]["phase"] == "Migrated"
    assert placement["301"] == placement["302"] == "pve4"
    assert children[302]["spec"]["withLocalDisks"] is True
    assert children[301]["spec"]["withLocalDisks"] is False
    assert entries[303]["reason"] == "unplaceable: uses local devices (hostpci0): PVE refuses"
    assert placement["303"] == "pve3"

    outcomes = [m["outcome"] for runs in state["migrations"].values() for m in runs]
    assert outcomes == ["ok"] * 3, state["migrations"]  # nothing was refused by PVE
    # one precondition check per guest of the drained nodes, kept, not re-read per pass
    assert state["api_requests"][CHECK] == 9, state["api_requests"]
