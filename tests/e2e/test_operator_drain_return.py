"""NodeDrain return home end to end: operator process, kube-apiserver, pvesim.

A drain with returnGuests empties pve1; a VMPlacement meanwhile pins one of its guests to
the node it was parked on; pve1 reboots; maintenanceDone waits for it to be online, then
sends every other guest back to pve1 and reports the pinned one ReturnSkipped with the
reason, in the status and as an Event. Deleting a returning drain stops the returns.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from kubernetes import client

from proxmigrate.api.constants import GROUP, VERSION
from tests.e2e.operator_env import condition, create, get, items
from tests.e2e.test_operator_drains import (
    connect,
    drain_status,
    node,
    nodedrain,
    start_sim,
    vm,
    wait_phase,
)
from tests.e2e.test_operator_migrations import metric_value
from tests.e2e.test_operator_placements import placement, wait_condition
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, wait_for

_namespaces = itertools.count()
CLUSTER = {
    "nodes": [node("pve1", 64), node("pve2", 32), node("pve3", 32)],
    "vms": [vm(vmid, "pve1", 2) for vmid in range(100, 106)] + [vm(200, "pve2", 1)],
}


def gauges(operator: OperatorProcess, namespace: str) -> tuple[float, float]:
    """The drain's `remaining_vms` and `progress_ratio` of pve1, as the operator exports them."""
    text = operator.metrics()
    labels = {"proxmox_cluster": f"{namespace}/lab", "pve_node": "pve1"}
    return (
        metric_value(text, "proxmigrate_drain_remaining_vms", **labels),
        metric_value(text, "proxmigrate_drain_progress_ratio", **labels),
    )


@pytest.fixture
def namespace() -> str:
    return f"e2e-return-{next(_namespaces)}"


def test_guests_return_home_but_one_a_placement_pins_elsewhere(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    began = time.monotonic()
    with start_sim(tmp_path, CLUSTER) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("maint", "pve1", returnGuests=True))
        drained = wait_phase(api, namespace, "maint", {"Drained", "Failed"}, operator)
        assert drained["phase"] == "Drained", drained.get("conditions")
        parked = {entry["vmid"]: entry["to"] for entry in drained["vms"]}
        assert sorted(parked) == list(range(100, 106))
        assert set(parked.values()) <= {"pve2", "pve3"}
        pinned_to = parked[103]
        create(api, namespace, "vmplacements", placement("keep", vmid=103, node=pinned_to))
        wait_condition(api, namespace, "keep", "InSync", "True", operator)

        sim.fault(node_offline="pve1")  # rebooting
        wait_for(
            lambda: (
                {"name": "pve1", "online": False}
                in get(api, namespace, "proxmoxclusters", "lab")["status"].get("nodes", [])
            ),
            timeout=30,
            message=f"pve1 seen offline\n{operator.tail()}",
        )
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "nodedrains", "maint", {"spec": {"maintenanceDone": True}}
        )
        waiting = wait_for(
            lambda: (
                (ready := condition({"status": drain_status(api, namespace, "maint")}, "Ready"))
                and ready["reason"] == "WaitingForNode"
                and ready
            ),
            timeout=30,
            message=f"the return waiting for pve1\n{operator.tail()}",
        )
        assert "waiting for pve1 to be online to return 6 guests" in waiting["message"]
        # no ETA while it waits; the drain's gauges count the 6 guests still to come home
        assert drain_status(api, namespace, "maint").get("estimatedSecondsRemaining") is None
        assert gauges(operator, namespace) == (6.0, 0.0)
        assert not [
            c for c in items(api, namespace, "vmmigrations") if "-ret-" in c["metadata"]["name"]
        ]
        sim.fault(node_online="pve1")
        status = wait_phase(api, namespace, "maint", {"Returned"}, operator, timeout=60)
        where = sim.state()["placement"]
    elapsed = time.monotonic() - began

    assert {vmid: where[str(vmid)] for vmid in parked} == {
        **{vmid: "pve1" for vmid in parked},
        103: pinned_to,
    }
    assert where["200"] == "pve2"  # never the drain's
    assert (status["returned"], status["returnSkipped"], status["returnFailed"]) == (5, 1, 0)
    assert status["migrated"] == 6  # the drain's own record
    entries = {entry["vmid"]: entry for entry in status["vms"]}
    skipped = entries[103]
    assert skipped["returnPhase"] == "ReturnSkipped"
    assert skipped["returnReason"] == f"a VMPlacement pins it to {pinned_to}, not pve1"
    assert all(entries[v]["returnPhase"] == "Returned" for v in parked if v != 103)
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert condition({"status": status}, "Degraded")["status"] == "False"

    returns = [
        child
        for child in items(api, namespace, "vmmigrations")
        if "-ret-" in child["metadata"]["name"]
    ]
    assert len(returns) == 5
    assert all(child["spec"]["target"] == "pve1" for child in returns)
    assert all(child["metadata"]["labels"]["proxmigrate.dev/drain"] == "maint" for child in returns)
    reasons = {
        (event.reason, event.message)
        for event in client.CoreV1Api(api).list_namespaced_event(namespace).items
        if event.involved_object.name == "maint"
    }
    assert (
        "ReturnSkipped",
        f"VM 103 (vm103) stays on {pinned_to}: a VMPlacement pins it to {pinned_to}, not pve1",
    ) in reasons
    assert "GuestsReturned" in {reason for reason, _ in reasons}
    assert drain_status(api, namespace, "maint")["phase"] == "Returned"
    assert status["returnStartTime"] and status["estimatedSecondsRemaining"] == 0
    assert gauges(operator, namespace) == (0.0, 1.0)
    print(f"drain and return of 6 guests took {elapsed:.1f} s")


def test_deleting_a_returning_drain_stops_new_returns(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = {
        "datacenter": {"bwlimit": "migration=102400"},  # 100 MiB/s: each move takes a while
        "nodes": [node("pve1", 128), node("pve2", 128), node("pve3", 128)],
        "vms": [vm(100 + i, "pve1", 4) for i in range(8)],
    }
    custom = client.CustomObjectsApi(api)
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("maint", "pve1", returnGuests=True))
        drained = wait_phase(api, namespace, "maint", {"Drained", "Failed"}, operator)
        assert drained["phase"] == "Drained", drained.get("conditions")
        done = {"spec": {"maintenanceDone": True, "maxParallel": 2}}
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "nodedrains", "maint", done
        )
        wait_for(
            lambda: drain_status(api, namespace, "maint").get("returned", 0) >= 2,
            timeout=60,
            message=f"two VMs returned\n{operator.tail()}",
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "nodedrains", "maint")
        wait_for(
            lambda: not items(api, namespace, "nodedrains"),
            timeout=30,
            message=f"NodeDrain gone\n{operator.tail()}",
        )
        started_at_delete = sum(len(runs) for runs in sim.state()["migrations"].values())
        time.sleep(3)
        state = sim.state()
        returns = [
            c for c in items(api, namespace, "vmmigrations") if "-ret-" in c["metadata"]["name"]
        ]

    started = sum(len(runs) for runs in state["migrations"].values())
    assert started == started_at_delete, "a migration started after the drain was deleted"
    home = [vmid for vmid, where in state["placement"].items() if where == "pve1"]
    assert 2 <= len(home) < 8, home  # the rest stay where the drain parked them
    assert all((c.get("status") or {}).get("phase") in ("Succeeded", "Running") for c in returns), [
        c.get("status", {}).get("phase") for c in returns
    ]
    assert all(
        c["metadata"]["labels"].get("proxmigrate.dev/drain-history") == "maint" for c in returns
    )
