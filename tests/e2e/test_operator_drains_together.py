"""NodeDrains created together (one `kubectl create -f` of several) see each other's cordons
before their first plan: no guest is sent onto a node another of them drains."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.operator_env import create
from tests.e2e.test_operator_drains import (
    connect,
    node,
    nodedrain,
    start_sim,
    vm,
    wait_phase,
)
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess


@pytest.fixture
def namespace() -> str:
    return "e2e-drains-together"


def test_drains_created_together_never_move_guests_onto_each_others_nodes(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = {
        "nodes": [node(name, 128) for name in ("pve1", "pve2", "pve3", "pve4")],
        "vms": [vm(100 + i, "pve1", 4) for i in range(6)]
        + [vm(200 + i, "pve2", 4) for i in range(6)],
    }
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1"))
        # the next object of the same `kubectl apply -f`: kubectl creates them 5-16 ms apart
        # here; 50 ms is a remote API server's round trip
        time.sleep(0.05)
        create(api, namespace, "nodedrains", nodedrain("pve2", "pve2"))
        for name in ("pve1", "pve2"):
            status = wait_phase(api, namespace, name, {"Drained", "Failed"}, operator, timeout=90)
            assert status["phase"] == "Drained", status.get("conditions")
        state = sim.state()
    onto_drained = [
        (record["vmid"], record["target"])
        for runs in state["migrations"].values()
        for record in runs
        if record["target"] in ("pve1", "pve2")
    ]
    assert onto_drained == [], onto_drained
    assert all(where in ("pve3", "pve4") for where in state["placement"].values())
