"""NodeDrain end to end: operator process, kube-apiserver, pvesim with custom clusters."""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from proxmigrate.kubectl import cli as kubectl_plugin
from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import (
    TIME_SCALE,
    condition,
    create,
    get,
    items,
    scaled_policy,
    wait_cluster_decided,
)
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for

GIB = 1024**3
RESERVE_RATIO = 0.10  # the cluster's default placement.memoryReservePercent
RESERVE_MIN = 2 * GIB  # and placement.memoryReserveMinimum

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-drain-{next(_namespaces)}"


def node(name: str, memory_gib: float) -> dict[str, Any]:
    return {"name": name, "memory_gib": memory_gib, "cpus": 32}


def vm(vmid: int, node_name: str, memory_gib: float, **extra: Any) -> dict[str, Any]:
    return {
        "vmid": vmid,
        "name": f"vm{vmid}",
        "node": node_name,
        "memory_gib": memory_gib,
        "used_gib": memory_gib / 2,
        "dirty_mib_s": 5,
        **extra,
    }


def start_sim(tmp_path: Path, config: dict[str, Any]) -> PvesimProcess:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return PvesimProcess("--config", str(path), "--seed", "1", "--time-scale", str(TIME_SCALE))


def connect(
    api: client.ApiClient,
    namespace: str,
    sim: PvesimProcess,
    operator: OperatorProcess,
    **policy: Any,
) -> None:
    """A ProxmoxCluster `lab` for `sim`, waited for until Ready."""
    create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy(**policy))
    ready = wait_cluster_decided(api, namespace, operator)
    assert ready["status"] == "True", ready


def nodedrain(name: str, node_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "proxmigrate.dev/v1alpha1",
        "kind": "NodeDrain",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "lab"}, "nodeName": node_name, **spec},
    }


def drain_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(api, namespace, "nodedrains", name).get("status") or {})


def wait_phase(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phases: set[str],
    operator: OperatorProcess,
    timeout: float = 60,
) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (
                (status := drain_status(api, namespace, name)).get("phase") in phases and status
            ),
            timeout=timeout,
            message=f"NodeDrain {name} in {phases}\n{operator.tail()}",
        )
    )


def started_onto(state: dict[str, Any], target: str, since: float) -> list[int]:
    """VMs whose migration onto `target` started after simulated time `since` (pvesim's
    ground truth)."""
    return [
        record["vmid"]
        for runs in state["migrations"].values()
        for record in runs
        if record["target"] == target and record["start"] > since
    ]


def big_cluster() -> dict[str, Any]:
    """pve1 with 40 guests (80 GiB); three targets of 48 GiB, so the plan must spread them.

    Anti-affinity: db (100, 101 on pve1; 200 on pve2) and web (102-104 on pve1).
    """
    sizes = [1, 2, 4, 1, 2]
    guests = [vm(100 + i, "pve1", sizes[i % len(sizes)]) for i in range(40)]
    for vmid in (100, 101):
        guests[vmid - 100]["tags"] = ["anti-affinity_db"]
    for vmid in (102, 103, 104):
        guests[vmid - 100]["tags"] = ["anti-affinity_web"]
    guests.append(vm(200, "pve2", 2, tags=["anti-affinity_db"]))
    guests.append(vm(201, "pve3", 1))  # moved onto pve1 by hand during the drain
    return {
        "nodes": [node("pve1", 128), node("pve2", 48), node("pve3", 48), node("pve4", 48)],
        "vms": guests,
    }


def test_drain_of_a_40_vm_node(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = big_cluster()
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator)
        began = time.monotonic()
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1"))
        wait_for(
            lambda: drain_status(api, namespace, "pve1").get("startTime"),
            timeout=30,
            message=f"drain started\n{operator.tail()}",
        )
        sim.move_vm(201, "pve1")
        status = wait_phase(api, namespace, "pve1", {"Drained", "Failed"}, operator, timeout=150)
        elapsed = time.monotonic() - began
        state = sim.state()
        metrics = operator.metrics()

    assert status["phase"] == "Drained", status.get("conditions")
    assert (status["total"], status["migrated"], status["failed"]) == (41, 41, 0)  # 201 too
    assert (status["remaining"], status["progress"]) == (0, 1)
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert all(entry["phase"] == "Migrated" for entry in status["vms"])
    placement = state["placement"]
    assert not [vmid for vmid, where in placement.items() if where == "pve1"]
    memory = {spec["name"]: spec["memory_gib"] * GIB for spec in config["nodes"]}
    for target in ("pve2", "pve3", "pve4"):
        held = sum(
            g["memory_gib"] * GIB for g in config["vms"] if placement[str(g["vmid"])] == target
        )
        usable = memory[target] - max(RESERVE_MIN, memory[target] * RESERVE_RATIO)
        assert held <= usable, f"{target} holds {held / GIB} GiB, usable {usable / GIB}"
    for group in ("db", "web"):
        members = [g for g in config["vms"] if f"anti-affinity_{group}" in g.get("tags", [])]
        nodes_used = [placement[str(g["vmid"])] for g in members]
        assert len(set(nodes_used)) == len(nodes_used), f"group {group}: {nodes_used}"
    assert sum(info["drops"] for info in state["ssh"].values()) == 0, state["ssh"]
    outcomes = [m["outcome"] for runs in state["migrations"].values() for m in runs]
    assert outcomes.count("ok") == 41 and len(outcomes) == 41, outcomes
    children = items(api, namespace, "vmmigrations")
    assert len(children) == 41
    labels = f'{{nodedrain="{namespace}/pve1",proxmox_cluster="{namespace}/lab",pve_node="pve1"}}'
    assert f"proxmigrate_drain_progress_ratio{labels} 1.0" in metrics
    assert f"proxmigrate_drain_remaining_vms{labels} 0.0" in metrics
    assert all(c["metadata"]["labels"]["proxmigrate.dev/drain"] == "pve1" for c in children)
    assert all(c["metadata"]["ownerReferences"][0]["kind"] == "NodeDrain" for c in children)
    print(f"40-VM drain took {elapsed:.1f} s")


def small_cluster() -> dict[str, Any]:
    """pve1's three 16 GiB guests cannot fit on two 16 GiB targets; pve2's small ones can."""
    return {
        "nodes": [node("pve1", 64), node("pve2", 16), node("pve3", 16)],
        "vms": [
            vm(100, "pve1", 16),
            vm(101, "pve1", 16),
            vm(102, "pve1", 16),
            vm(200, "pve2", 1),
            vm(201, "pve2", 2),
        ],
    }


def test_dry_run_blocked_plan_and_bad_input_move_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with start_sim(tmp_path, small_cluster()) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("full", "pve1"))
        create(api, namespace, "nodedrains", nodedrain("unknown", "pve9"))
        create(api, namespace, "nodedrains", nodedrain("bad-target", "pve2", targets=["pve7"]))
        blocked = wait_phase(api, namespace, "full", {"Blocked"}, operator)
        # pve1 is cordoned by the blocked drain from here on: the dry run must avoid it.
        create(api, namespace, "nodedrains", nodedrain("plan", "pve2", dryRun=True))
        dry = wait_for(
            lambda: (s := drain_status(api, namespace, "plan")).get("plan") and s,
            timeout=30,
            message=f"dry-run plan\n{operator.tail()}",
        )
        create(api, namespace, "nodedrains", nodedrain("second", "pve1"))
        duplicate = wait_phase(api, namespace, "second", {"Blocked"}, operator)
        unknown = wait_phase(api, namespace, "unknown", {"Blocked"}, operator)
        bad_target = wait_phase(api, namespace, "bad-target", {"Blocked"}, operator)
        plan_out = io.StringIO()
        plugin = ["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
        plan_code = kubectl_plugin.main([*plugin, "plan", "pve2"], out=plan_out)
        unknown_code = kubectl_plugin.main([*plugin, "drain", "pve9"], out=io.StringIO())
        time.sleep(2)  # a few more reconcile passes: still nothing may move
        state = sim.state()
        children = items(api, namespace, "vmmigrations")

    assert dry["phase"] == "Pending"
    assert sorted(e["vmid"] for e in dry["plan"]["entries"]) == [200, 201]
    assert {e["to"] for e in dry["plan"]["entries"]} == {"pve3"}
    assert [e["order"] for e in dry["plan"]["entries"]] == [1, 2]
    assert "startTime" not in dry

    degraded = condition({"status": blocked}, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InsufficientCapacity"
    assert "cannot place 3 of 3 VMs" in degraded["message"]
    assert "memory missing" in degraded["message"] and "100 (vm100)" in degraded["message"]
    assert blocked["plan"]["missingMemoryBytes"] > 0

    duplicate_cond = condition({"status": duplicate}, "Degraded")
    assert duplicate_cond["reason"] == "DuplicateDrain"
    assert "already being drained by NodeDrain full" in duplicate_cond["message"]
    assert "'pve9' is not in the cluster" in condition({"status": unknown}, "Degraded")["message"]
    assert (
        "'pve7' is not in the cluster" in condition({"status": bad_target}, "Degraded")["message"]
    )

    assert plan_code == 0 and unknown_code == 1
    plan_lines = plan_out.getvalue().splitlines()
    assert plan_lines[0].split() == ["ORDER", "VMID", "NAME", "MEMORY", "FROM", "TO"]
    assert [line.split()[-1] for line in plan_lines[1:3]] == ["pve3", "pve3"]
    remaining = {d["metadata"]["name"] for d in items(api, namespace, "nodedrains")}
    assert remaining == {"plan", "full", "second", "unknown", "bad-target"}  # plan cleaned up

    assert children == []
    assert state["migrations"] == {}


def test_deleting_a_drain_stops_new_migrations(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = {
        "datacenter": {"bwlimit": "migration=102400"},  # 100 MiB/s: each move takes a while
        "nodes": [node("pve1", 128), node("pve2", 128), node("pve3", 128)],
        "vms": [vm(100 + i, "pve1", 4) for i in range(12)],
    }
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator)
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1", maxParallel=2))
        wait_for(
            lambda: drain_status(api, namespace, "pve1").get("migrated", 0) >= 2,
            timeout=60,
            message=f"two VMs migrated\n{operator.tail()}",
        )
        text = operator.metrics()
        series = f'proxmigrate_drain_remaining_vms{{nodedrain="{namespace}/pve1"'
        assert series in text, [line for line in text.splitlines() if "proxmigrate_drain" in line]
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "nodedrains", "pve1"
        )
        wait_for(
            lambda: not items(api, namespace, "nodedrains"),
            timeout=30,
            message=f"NodeDrain gone\n{operator.tail()}",
        )
        started_at_delete = sum(len(runs) for runs in sim.state()["migrations"].values())
        time.sleep(3)
        state = sim.state()
        # the drain's series went with it, also after the pass that ran during the deletion
        assert f'nodedrain="{namespace}/pve1"' not in operator.metrics()
        children = items(api, namespace, "vmmigrations")

    started = sum(len(runs) for runs in state["migrations"].values())
    assert started == started_at_delete, "a migration started after the drain was deleted"
    assert started < 12
    assert all(
        (c.get("status") or {}).get("phase") in ("Succeeded", "Running") for c in children
    ), [c.get("status", {}).get("phase") for c in children]
    assert all(
        not c["metadata"].get("ownerReferences")
        for c in children
        if c["status"]["phase"] == "Running"
    )


def test_queued_moves_onto_a_node_that_starts_draining_go_elsewhere(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """Drain pve1 onto pve2 and pve3 one VM at a time; once pve2's own drain begins, the
    moves still queued for pve2 are withdrawn and planned onto pve3."""
    api = control_plane.api_client()
    config = {
        "datacenter": {"bwlimit": "migration=51200"},  # 50 MiB/s: ~2 s real per move
        "nodes": [node("pve1", 128), node("pve2", 128), node("pve3", 128), node("pve4", 16)],
        "vms": [vm(100 + i, "pve1", 4) for i in range(8)] + [vm(200, "pve2", 4)],
    }
    with start_sim(tmp_path, config) as sim:
        connect(api, namespace, sim, operator, maxParallel=1)
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1", targets=["pve2", "pve3"]))

        def queued_onto_pve2() -> list[int]:
            entries = drain_status(api, namespace, "pve1").get("vms") or []
            return [e["vmid"] for e in entries if e["phase"] == "Queued" and e["to"] == "pve2"]

        queued = wait_for(
            lambda: len(queued_onto_pve2()) >= 3 and queued_onto_pve2(),
            timeout=30,
            message=f"moves queued onto pve2\n{operator.tail()}",
        )
        create(api, namespace, "nodedrains", nodedrain("pve2", "pve2", targets=["pve3", "pve4"]))
        cordoned_at = sim.state()["now"]
        first = wait_phase(api, namespace, "pve1", {"Drained", "Failed"}, operator, timeout=180)
        second = wait_phase(api, namespace, "pve2", {"Drained", "Failed"}, operator, timeout=120)
        state = sim.state()

    assert first["phase"] == "Drained", first.get("conditions")
    assert (first["migrated"], first["failed"]) == (8, 0), first["vms"]
    assert second["phase"] == "Drained", second.get("conditions")
    late_onto_pve2 = started_onto(state, "pve2", cordoned_at)
    # one VM at a time, so at most one queued move may start before pve1's next pass
    assert len(late_onto_pve2) <= 1 < len(queued), (late_onto_pve2, queued)
    placement = state["placement"]
    assert all(placement[str(100 + i)] in ("pve3", "pve4") for i in range(8)), placement
    assert placement["200"] in ("pve3", "pve4")
    assert sum(info["drops"] for info in state["ssh"].values()) == 0
