"""A rolling maintenance of a 4-node pvesim cluster with return home (issue 18): the test
plays the admin (the done annotation once a node is InMaintenance); every guest ends on its
own node, and no guest of a later step is parked on a node drained after it while an
already maintained node had room."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from proxmigrate.api.constants import GROUP, NODEMAINTENANCES, VERSION
from proxmigrate.api.maintenance import DONE_ANNOTATION
from proxmigrate.kubectl.cli import main as kubectl_proxmigrate
from tests.e2e.operator_env import create, get, items
from tests.e2e.test_operator_drains import connect, node, start_sim, vm
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, wait_for

NODES = ("pve1", "pve2", "pve3", "pve4")
GUESTS_PER_NODE = 3
BUDGET_SECONDS = 150.0


@pytest.fixture
def namespace() -> str:
    return "e2e-rolling"


def home(vmid: int) -> str:
    return f"pve{vmid // 100}"


def cluster() -> dict[str, Any]:
    """4 nodes of 64 GiB with three 4 GiB guests each: a maintained node, its guests back,
    has room for every guest of the next node, so nothing needs parking on a later node."""
    return {
        "nodes": [node(name, 64) for name in NODES],
        "vms": [
            vm(100 * n + i, f"pve{n}", 4) for n in range(1, len(NODES) + 1) for i in range(1, 4)
        ],
    }


def maintenance() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeMaintenance",
        "metadata": {"name": "kernel"},
        "spec": {"clusterRef": {"name": "lab"}, "nodes": list(NODES), "returnGuests": True},
    }


def test_rolling_maintenance_of_four_nodes_with_return_home(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    custom = client.CustomObjectsApi(api)
    with start_sim(tmp_path, cluster()) as sim:
        connect(api, namespace, sim, operator)
        plan = io.StringIO()  # the plan up front, through the plugin's dry run
        flags = ["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
        assert kubectl_proxmigrate(["plan", "--maintenance", *NODES, *flags], plan) == 0
        rows = plan.getvalue().splitlines()[1 : 1 + len(NODES)]
        assert [row.split()[:3] for row in rows] == [
            [str(i + 1), name, str(GUESTS_PER_NODE)] for i, name in enumerate(NODES)
        ]
        wait_for(  # the dry run is gone (the operator's finalizer released)
            lambda: not items(api, namespace, NODEMAINTENANCES),
            timeout=30,
            message=f"the dry-run NodeMaintenance deleted\n{operator.tail()}",
        )
        began = time.monotonic()
        create(api, namespace, NODEMAINTENANCES, maintenance())
        signalled: list[str] = []
        seen_phases: dict[str, list[str]] = {name: [] for name in NODES}
        status: dict[str, Any] = {}
        while time.monotonic() - began < BUDGET_SECONDS:
            status = get(api, namespace, NODEMAINTENANCES, "kernel").get("status") or {}
            for entry in status.get("nodes") or []:
                phases = seen_phases[entry["name"]]
                if not phases or phases[-1] != entry["phase"]:
                    phases.append(entry["phase"])
            if status.get("phase") in ("Succeeded", "Failed", "Blocked"):
                break
            for entry in status.get("nodes") or []:
                if entry["phase"] == "InMaintenance" and entry["name"] not in signalled:
                    signalled.append(entry["name"])  # the admin: this node's work is done
                    patch = {"metadata": {"annotations": {DONE_ANNOTATION: entry["name"]}}}
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, NODEMAINTENANCES, "kernel", patch
                    )
            time.sleep(0.3)
        took = time.monotonic() - began
        assert status.get("phase") == "Succeeded", (status, operator.tail())
        placement = {int(vmid): where for vmid, where in sim.state()["placement"].items()}
    print(f"rolling maintenance of {len(NODES)} nodes: {took:.0f} s")
    assert took < BUDGET_SECONDS
    assert status["done"] == status["total"] == len(NODES)
    assert signalled == list(NODES)  # one node at a time, in order
    for name in NODES:
        assert "InMaintenance" in seen_phases[name] and seen_phases[name][-1] == "Done"
    assert {vmid: home(vmid) for vmid in placement} == placement  # every guest is home

    migrations = items(api, namespace, "vmmigrations")
    departures = [
        (int(m["spec"]["vmid"]), m["spec"]["target"])
        for m in migrations
        if m["spec"]["target"] != home(int(m["spec"]["vmid"]))
    ]
    assert len(departures) == GUESTS_PER_NODE * len(NODES), departures
    for vmid, target in departures:
        step = NODES.index(home(vmid))
        if step > 0:  # step 1 has only later nodes as targets: it spreads as usual
            assert target in NODES[:step], f"vm {vmid} of step {step + 1} parked on {target}"
    returns = [m for m in migrations if m["spec"]["target"] == home(int(m["spec"]["vmid"]))]
    assert len(returns) == len(departures)
    assert all((m.get("status") or {}).get("phase") == "Succeeded" for m in migrations)

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, NODEMAINTENANCES, "kernel")
    wait_for(  # its NodeDrains go with it (garbage collector)
        lambda: not items(api, namespace, "nodedrains"),
        timeout=30,
        message=f"the maintenance's NodeDrains deleted\n{operator.tail()}",
    )
