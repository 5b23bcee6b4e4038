"""VMPlacement end to end: drift corrected or reported, drains respected, bad input refused."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.operator_env import condition, create, get, items
from tests.e2e.test_operator_drains import (
    connect,
    node,
    nodedrain,
    start_sim,
    started_onto,
    vm,
    wait_phase,
)
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, wait_for

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-place-{next(_namespaces)}"


CLUSTER = {
    "nodes": [node("pve1", 64), node("pve2", 64), node("pve3", 64)],
    "vms": [
        vm(100, "pve1", 2),
        vm(101, "pve1", 2),
        vm(102, "pve2", 2),
        {**vm(103, "pve2", 1), "name": "twin"},
        {**vm(104, "pve3", 1), "name": "twin"},
        vm(105, "pve3", 1),
    ],
}


def placement(object_name: str, /, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "proxmigrate.dev/v1alpha1",
        "kind": "VMPlacement",
        "metadata": {"name": object_name},
        "spec": {"clusterRef": {"name": "lab"}, **spec},
    }


def placement_body(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return get(api, namespace, "vmplacements", name)


def wait_condition(
    api: client.ApiClient,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    operator: OperatorProcess,
    timeout: float = 30,
) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (
                (body := placement_body(api, namespace, name))
                and (found := condition(body, type_))
                and found["status"] == status
                and body
            ),
            timeout=timeout,
            message=f"VMPlacement {name} {type_}={status}\n{operator.tail()}",
        )
    )


def children_of(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        child
        for child in items(api, namespace, "vmmigrations")
        if child["metadata"].get("labels", {}).get("proxmigrate.dev/placement") == name
    ]


def test_drift_is_corrected_with_enforce_and_only_reported_with_report(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, CLUSTER) as sim:
        connect(api, namespace, sim, operator)
        guard = {"maxMigrations": 1, "windowSeconds": 600}
        create(
            api, namespace, "vmplacements", placement("web", vmid=100, node="pve1", flapGuard=guard)
        )
        create(
            api,
            namespace,
            "vmplacements",
            placement("seen", vmid=101, node="pve1", policy="report"),
        )
        for name in ("web", "seen"):
            wait_condition(api, namespace, name, "InSync", "True", operator)
        sim.move_vm(100, "pve2")
        sim.move_vm(101, "pve2")
        web = wait_for(
            lambda: (
                (body := placement_body(api, namespace, "web"))["status"].get("lastMigration", {})
                and body["status"]["lastMigration"].get("phase") == "Succeeded"
                and body["status"]["inSync"]
                and body
            ),
            timeout=40,
            message=f"web moved back\n{operator.tail()}",
        )
        seen = wait_condition(api, namespace, "seen", "InSync", "False", operator)
        sim.move_vm(100, "pve3")  # again: the flap guard allows one migration per window
        flapping = wait_condition(api, namespace, "web", "Degraded", "True", operator)
        time.sleep(4)  # more syncs: neither the report nor the guarded placement may move
        state = sim.state()
        seen_children = children_of(api, namespace, "seen")
        web_children = children_of(api, namespace, "web")
        generations = [
            placement_body(api, namespace, n)["metadata"]["generation"] for n in ("web", "seen")
        ]

    assert state["placement"]["100"] == "pve3"  # the flap guard held it there
    assert [m["outcome"] for m in state["migrations"]["100"]] == ["ok"]
    flap = condition(flapping, "Degraded")
    assert flap["reason"] == "FlapGuard" and "VMs 100 were migrated too often" in flap["message"]
    last = web["status"]["lastMigration"]
    assert (last["vmid"], last["from"], last["to"]) == (100, "pve2", "pve1")
    assert len(web_children) == 1 and web_children[0]["spec"]["target"] == "pve1"
    assert web["status"]["currentNode"] == web["status"]["desiredNode"] == "pve1"

    assert state["placement"]["101"] == "pve2"
    assert "101" not in state["migrations"]
    assert seen_children == []
    drift = condition(seen, "InSync")
    assert drift["reason"] == "Drift" and "101 on pve2, desired pve1" in drift["message"]
    assert seen["status"]["currentNode"] == "pve2" and seen["status"]["outOfSyncVMs"] == 1
    assert generations == [1, 1]  # spec never written


def test_placement_onto_a_drained_node_waits_then_resumes_and_bad_input_moves_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, CLUSTER) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("pve3", "pve3"))
        wait_phase(api, namespace, "pve3", {"Drained"}, operator)
        create(api, namespace, "vmplacements", placement("back", vmid=102, node="pve3"))
        create(
            api,
            namespace,
            "vmplacements",
            placement("nothing", selector={"tags": ["nope"]}, node="pve1"),
        )
        create(api, namespace, "vmplacements", placement("twins", name="twin", node="pve1"))
        blocked = wait_condition(api, namespace, "back", "Blocked", "True", operator)
        nothing = wait_condition(api, namespace, "nothing", "Degraded", "True", operator)
        twins = wait_condition(api, namespace, "twins", "Degraded", "True", operator)
        time.sleep(3)
        waiting_children = children_of(api, namespace, "back")
        waiting_where = sim.state()["placement"]["102"]
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "nodedrains", "pve3"
        )
        wait_for(
            lambda: sim.state()["placement"]["102"] == "pve3",
            timeout=40,
            message=f"102 moved to pve3 after the drain\n{operator.tail()}",
        )
        resumed = wait_condition(api, namespace, "back", "InSync", "True", operator)
        bad_children = children_of(api, namespace, "nothing") + children_of(api, namespace, "twins")

    cordon = condition(blocked, "Blocked")
    assert (
        cordon["reason"] == "NodeCordoned" and "pve3 cordoned by a NodeDrain" in cordon["message"]
    )
    assert waiting_children == [] and waiting_where == "pve2"
    assert condition(resumed, "Blocked")["status"] == "False"
    assert resumed["status"]["lastMigration"]["to"] == "pve3"

    assert "selector matches no VM" in condition(nothing, "Degraded")["message"]
    twin_message = condition(twins, "Degraded")["message"]
    assert "name 'twin' matches 2 VMs" in twin_message and "select by vmid" in twin_message
    assert condition(twins, "Ready")["reason"] == "InvalidSelection"
    assert bad_children == []


def test_queued_moves_onto_a_node_that_starts_draining_are_withdrawn_until_it_ends(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = {
        "datacenter": {"bwlimit": "migration=25600"},  # 25 MiB/s: ~4 s real per move
        "nodes": [node("pve1", 64), node("pve2", 64), node("pve3", 64)],
        "vms": [vm(100 + i, "pve1", 4, tags=["web"]) for i in range(6)],
    }
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator, maxParallel=1)
        create(
            api,
            namespace,
            "vmplacements",
            placement("web", selector={"tags": ["web"]}, node="pve2"),
        )

        def queued() -> list[str]:
            return [
                c["metadata"]["name"]
                for c in children_of(api, namespace, "web")
                if (c.get("status") or {}).get("phase") == "Queued"
            ]

        waiting = wait_for(
            lambda: len(queued()) >= 3 and queued(),
            timeout=30,
            message=f"moves queued onto pve2\n{operator.tail()}",
        )
        create(api, namespace, "nodedrains", nodedrain("pve2", "pve2"))
        cordoned_at = sim.state()["now"]
        wait_condition(api, namespace, "web", "Blocked", "True", operator)
        wait_phase(api, namespace, "pve2", {"Drained"}, operator)
        wait_for(
            lambda: (
                not [
                    c
                    for c in children_of(api, namespace, "web")
                    if (c.get("status") or {}).get("phase")
                    not in ("Succeeded", "Failed", "Cancelled")
                ]
            ),
            timeout=60,
            message=f"the placement's moves settled\n{operator.tail()}",
        )
        during = sim.state()
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "nodedrains", "pve2"
        )
        wait_condition(api, namespace, "web", "InSync", "True", operator, timeout=60)
        after = sim.state()

    late_onto_pve2 = started_onto(during, "pve2", cordoned_at)
    # one VM at a time, so at most one queued move may start before the placement's next sync
    assert len(late_onto_pve2) <= 1 < len(waiting), (late_onto_pve2, waiting)
    assert all(after["placement"][str(100 + i)] == "pve2" for i in range(6)), after["placement"]
