"""One chaos scenario: a real drain under a fault, judged by pvesim's ground truth.

`run_drain` starts pvesim, the operator (one or two replicas), a ProxmoxCluster and a
NodeDrain of pve1, hands the scene to a fault function once the drain moves, and waits
for the drain to end. `Outcome` holds the figures docs/reliability.md reports: every movable
VM moved exactly once or failed with a reason (`duplicates`, `lost`), no VMMigration left
non-final, the in-flight and queued gauges back to 0, and how long the drain took to make
progress again after the fault ended.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import create, get, items, scaled_policy
from tests.support.controlplane import ControlPlane
from tests.support.devenv import (
    OperatorProcess,
    create_cluster_for_pvesim,
    ensure_namespace,
    wait_for,
)

FINAL = {"Succeeded", "Failed", "Cancelled"}
DRAIN_ENDS = {"Drained", "Failed", "Blocked", "Cancelled"}
PEERING = "proxmigrate"
# Where each scenario appends its figures (one JSON line); docs/reliability.md quotes them.
FIGURES = Path(os.environ.get("PROXMIGRATE_CHAOS_FIGURES", "/tmp/proxmigrate-chaos.jsonl"))


def cluster_config(vms: int) -> dict[str, Any]:
    """pve1 holds `vms` small guests on shared storage; pve2-pve4 have room for all."""
    return {
        "pve_version": 9,
        "shared_storages": ["ceph"],
        "nodes": [
            {"name": name, "memory_gib": 512, "cpus": 64, "nic_gbit": 10}
            for name in ("pve1", "pve2", "pve3", "pve4")
        ],
        "vms": [
            {
                "vmid": 100 + index,
                "name": f"vm{index}",
                "node": "pve1",
                "memory_gib": 2,
                "used_gib": 1,
                "dirty_mib_s": 5,
                "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 8}],
            }
            for index in range(vms)
        ],
    }


@dataclass
class Scene:
    """What a fault function may act on."""

    plane: ControlPlane
    api: client.ApiClient
    namespace: str
    sim: PvesimProcess
    replicas: list[OperatorProcess]
    vms: int
    fault_ended: float = 0.0  # monotonic; set by the fault function, else when it returns

    def moved(self) -> int:
        """Guests pvesim has moved off pve1 so far."""
        return sum(1 for node in self.sim.state()["placement"].values() if node != "pve1")

    def wait_moved(self, count: int, timeout: float = 60) -> None:
        wait_for(
            lambda: self.moved() >= count,
            timeout=timeout,
            interval=0.1,
            message=f"{count} VMs moved\n{self.tail()}",
        )

    def tail(self) -> str:
        return "\n".join(replica.tail(30) for replica in self.replicas)


@dataclass
class Outcome:
    scenario: str
    drain_phase: str
    moved: int
    failed_with_reason: int
    duplicates: list[int]
    lost: list[int]
    non_final: list[str]
    in_flight: float
    queued: float
    recovery_seconds: float
    total_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def check(self, vms: int) -> None:
        assert not self.duplicates, f"moved more than once: {self.duplicates}"
        assert not self.lost, f"neither moved nor failed with a reason: {self.lost}"
        assert not self.non_final, f"VMMigrations left non-final: {self.non_final}"
        assert self.moved + self.failed_with_reason == vms
        assert (self.in_flight, self.queued) == (0, 0), "metrics not back to idle"


def _gauge(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


@contextmanager
def _scene(
    plane: ControlPlane,
    tmp_path: Path,
    namespace: str,
    vms: int,
    replicas: int,
    kubeconfig: Path | None,
    sim_args: tuple[str, ...],
    peering_object: bool,
) -> Iterator[Scene]:
    api = plane.api_client()
    ensure_namespace(api, namespace)
    if replicas > 1 and peering_object:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
        )  # fmt: skip
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(vms)))
    with ExitStack() as stack:
        sim = stack.enter_context(PvesimProcess("--config", str(config), "--seed", "3", *sim_args))
        processes = [
            OperatorProcess(
                kubeconfig or plane.kubeconfig,
                tmp_path / f"operator-{index}.log",
                namespace=namespace,
                peering=PEERING if replicas > 1 else "none",
                priority=10 - index,
                peering_lifetime_seconds=5,
            )
            for index in range(replicas)
        ]
        for process in processes:
            stack.callback(process.stop)
            process.start()
        yield Scene(plane, api, namespace, sim, processes, vms)


def run_drain(
    plane: ControlPlane,
    tmp_path: Path,
    scenario: str,
    vms: int,
    fault: Callable[[Scene], None],
    *,
    replicas: int = 1,
    kubeconfig: Path | None = None,
    time_scale: float = 40.0,
    sim_args: tuple[str, ...] = (),
    peering_object: bool = True,
    start_after: int = 2,
    timeout: float = 150,
) -> Outcome:
    """The drain of pve1 under `fault`, which is called once `start_after` VMs moved."""
    namespace = f"chaos-{scenario}"
    args = ("--time-scale", str(time_scale), *sim_args)
    with _scene(
        plane, tmp_path, namespace, vms, replicas, kubeconfig, args, peering_object
    ) as scene:
        policy = scaled_policy(maxParallel=8)
        create_cluster_for_pvesim(scene.api, namespace, "lab", scene.sim, policy)
        if len(scene.sim.urls) > 1:  # every endpoint, for failover
            endpoints = [url.removeprefix("https://") for url in scene.sim.urls]
            client.CustomObjectsApi(scene.api).patch_namespaced_custom_object(
                "proxmigrate.dev", "v1alpha1", namespace, "proxmoxclusters", "lab",
                {"spec": {"endpoints": endpoints}},
            )  # fmt: skip
        began = time.monotonic()
        create(
            scene.api,
            namespace,
            "nodedrains",
            {
                "apiVersion": "proxmigrate.dev/v1alpha1",
                "kind": "NodeDrain",
                "metadata": {"name": "pve1"},
                "spec": {"clusterRef": {"name": "lab"}, "nodeName": "pve1"},
            },
        )
        scene.wait_moved(start_after)
        fault(scene)
        ended = scene.fault_ended or time.monotonic()
        moved_at_end = scene.moved()
        recovery = -1.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now_moved = scene.moved()
            if recovery < 0 and (now_moved > moved_at_end or now_moved == vms):
                recovery = time.monotonic() - ended
            phase = (get(scene.api, namespace, "nodedrains", "pve1").get("status") or {}).get(
                "phase"
            )
            children = items(scene.api, namespace, "vmmigrations")
            if phase in DRAIN_ENDS and all(
                (c.get("status") or {}).get("phase") in FINAL for c in children
            ):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"{scenario}: the drain did not end\n{scene.tail()}")
        total = time.monotonic() - began
        time.sleep(1.0)  # one more engine tick exports the idle gauges
        active = [r for r in scene.replicas if r.process and r.process.poll() is None]
        metrics = "\n".join(r.metrics() for r in active)
        outcome = _judge(scene, scenario, str(phase), metrics, recovery, total)
    with FIGURES.open("a") as out:
        out.write(json.dumps(vars(outcome)) + "\n")
    print(json.dumps(vars(outcome)))
    return outcome


def _judge(
    scene: Scene, scenario: str, phase: str, metrics: str, recovery: float, total: float
) -> Outcome:
    state = scene.sim.state()
    children = items(scene.api, scene.namespace, "vmmigrations")
    by_vmid: dict[int, list[dict[str, Any]]] = {}
    for child in children:
        by_vmid.setdefault(int(child["spec"]["vmid"]), []).append(child)
    duplicates, lost, failed = [], [], 0
    for index in range(scene.vms):
        vmid = 100 + index
        records = state["migrations"].get(str(vmid), [])
        if sum(1 for r in records if r.get("vm_moved")) > 1:
            duplicates.append(vmid)
        if state["placement"][str(vmid)] != "pve1":
            continue
        reasons = [
            (c.get("status") or {}).get("message")
            for c in by_vmid.get(vmid, [])
            if (c.get("status") or {}).get("phase") == "Failed"
        ]
        if any(reasons):
            failed += 1
        else:
            lost.append(vmid)
    moved = sum(1 for i in range(scene.vms) if state["placement"][str(100 + i)] != "pve1")
    return Outcome(
        scenario=scenario,
        drain_phase=phase,
        moved=moved,
        failed_with_reason=failed,
        duplicates=duplicates,
        lost=lost,
        non_final=[
            c["metadata"]["name"]
            for c in children
            if (c.get("status") or {}).get("phase") not in FINAL
        ],
        in_flight=_gauge(metrics, "proxmigrate_migrations_in_flight"),
        queued=_gauge(metrics, "proxmigrate_migrations_queued"),
        recovery_seconds=round(recovery, 1),
        total_seconds=round(total, 1),
        notes={"pve_migrations": sum(len(r) for r in state["migrations"].values())},
    )
