"""`make demo-rolling`: a rolling maintenance of the simulated demo cluster with return home.

The same cluster and provisioning as `make demo` (hack/demo.py); prints the plan per step
(`kubectl proxmigrate plan --maintenance`), applies examples/demo/nodemaintenance.yaml, and
plays the admin: when a node is drained (InMaintenance) it waits a moment, as the node's
upgrade and reboot would, then declares the node done with the
proxmigrate.dev/maintenance-done annotation; each node's progress is printed as it goes.
Ends when every node is done, with every guest back on its node (pvesim's ground truth)
but those whose return was skipped, printed with the reason.
Everything it starts is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo
from kubernetes import client
from tests.support.controlplane import KOPF_PEERING_CRDS, ControlPlane, provisioning
from tests.support.devenv import OperatorProcess, ensure_namespace

from proxmigrate.api.constants import GROUP, NODEDRAINS, NODEMAINTENANCES, VERSION
from proxmigrate.api.enums import DrainReturnPhase
from proxmigrate.api.maintenance import DONE_ANNOTATION, MAINTENANCE_LABEL
from proxmigrate.kubectl.cli import main as kubectl_proxmigrate
from proxmigrate.kubectl.tables import render_objects
from pvesim.testing import PvesimProcess

MANIFEST = demo.DEMO / "nodemaintenance.yaml"
NAMESPACE = demo.NAMESPACE
MAINTENANCE_SECONDS = 3.0  # the "upgrade and reboot" of each node, in real seconds
TIMEOUT = 300.0  # real seconds for the whole maintenance
# Measured on 2 cores with everything provisioned: `make demo-rolling` to "nothing left running".
DEMO_SECONDS = 110
POLL_SECONDS = 0.5


def introduce() -> None:
    cluster = yaml.safe_load((demo.DEMO / "pvesim-cluster.yaml").read_text())
    nodes = yaml.safe_load(MANIFEST.read_text())["spec"]["nodes"]
    print(
        f"make demo-rolling: the operator maintains {', '.join(nodes)} of a simulated Proxmox "
        f"VE cluster ({len(cluster['vms'])} VMs, pvesim at {demo.TIME_SCALE}x real time) one "
        "node at a time: drain, a pause standing for the upgrade and reboot, the guests "
        f"return home, next node; about {provisioning().duration(DEMO_SECONDS)}"
        f"{demo.build_note()}",
        flush=True,
    )


def node_line(entry: dict[str, Any]) -> str:
    phase = entry["phase"]
    text = f"    {entry['name']}: {phase}"
    if phase in ("Draining", "InMaintenance", "Returning", "Done"):
        text += f" ({entry.get('migrated', 0)} guests moved off"
        if phase in ("Returning", "Done"):
            text += f", {entry.get('returned', 0)} returned"
        text += ")"
    if entry.get("message"):
        text += f": {entry['message']}"
    return text


def follow(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    """Print each node's transitions and progress; declare a drained node done after
    MAINTENANCE_SECONDS; answer the maintenance once it ends."""
    deadline = time.monotonic() + TIMEOUT
    shown: dict[str, tuple[Any, ...]] = {}
    drained_at: dict[str, float] = {}
    declared: set[str] = set()
    while time.monotonic() < deadline:
        body = custom.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, NODEMAINTENANCES, name
        )
        status = body.get("status") or {}
        for entry in status.get("nodes") or []:
            node = entry["name"]
            seen = (entry["phase"], entry.get("migrated"), entry.get("returned"))
            if shown.get(node) != seen and entry["phase"] != "Pending":
                shown[node] = seen
                print(node_line(entry), flush=True)
            if entry["phase"] == "InMaintenance" and node not in declared:
                drained_at.setdefault(node, time.monotonic())
                if time.monotonic() - drained_at[node] >= MAINTENANCE_SECONDS:
                    declared.add(node)
                    print(f"    {node}: maintenance done, declared by the annotation", flush=True)
                    patch = {"metadata": {"annotations": {DONE_ANNOTATION: node}}}
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, NODEMAINTENANCES, name, patch
                    )
        if status.get("phase") in ("Succeeded", "Failed", "Blocked"):
            return dict(body)
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"maintenance not finished after {TIMEOUT:.0f} s")


def return_skips(custom: client.CustomObjectsApi, maintenance: str) -> dict[int, str]:
    """Guests whose return the maintenance's NodeDrains skipped, with the reason (the demo
    cluster puts two guests of anti-affinity group `db` on pve1: only one may go back)."""
    drains = custom.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, NODEDRAINS, label_selector=f"{MAINTENANCE_LABEL}={maintenance}"
    )["items"]
    return {
        int(entry["vmid"]): str(entry.get("returnReason") or "")
        for drain in drains
        for entry in (drain.get("status") or {}).get("vms") or []
        if entry.get("returnPhase") == DrainReturnPhase.SKIPPED
    }


def run(workdir: Path) -> int:
    introduce()
    provision = provisioning()
    provision.ensure(provision.for_targets(["demo"]), out=sys.stdout)
    config = yaml.safe_load((demo.DEMO / "pvesim-cluster.yaml").read_text())
    homes = {int(vm["vmid"]): vm["node"] for vm in config["vms"]}
    with contextlib.ExitStack() as stack:
        demo.step("starting a local kube-apiserver + etcd, and pvesim (examples/demo/)")
        plane = ControlPlane()
        stack.callback(plane.stop)
        sim = PvesimProcess(
            "--config",
            str(demo.DEMO / "pvesim-cluster.yaml"),
            "--seed",
            "1",
            "--time-scale",
            str(demo.TIME_SCALE),
        )
        stack.callback(sim.stop)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            starts = [pool.submit(plane.start), pool.submit(sim.__enter__)]
        for started in starts:
            started.result()
        plane.apply_crds([*sorted((demo.REPO_ROOT / "crds").glob("*.yaml")), KOPF_PEERING_CRDS])
        api = plane.api_client()
        ensure_namespace(api, NAMESPACE)
        demo.step("starting the operator")
        operator = OperatorProcess(plane.kubeconfig, workdir / "operator.log", namespace=NAMESPACE)
        stack.enter_context(operator)
        demo.step("applying examples/demo/proxmoxcluster.yaml")
        cluster = demo.apply_cluster(api, sim)
        status = demo.wait_connected(api, cluster, operator)
        print(f"    {status.get('nodesOnline')} nodes online, {status.get('vmCount')} VMs")
        manifest = yaml.safe_load(MANIFEST.read_text())
        nodes = manifest["spec"]["nodes"]
        demo.step(f"kubectl proxmigrate plan --maintenance {' '.join(nodes)}")
        kubeconfig = ["--kubeconfig", str(plane.kubeconfig), "-n", NAMESPACE]
        kubectl_proxmigrate(["plan", "--maintenance", *nodes, *kubeconfig])
        demo.step("applying examples/demo/nodemaintenance.yaml")
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, NODEMAINTENANCES, manifest
        )
        began = time.monotonic()
        final = follow(custom, manifest["metadata"]["name"])
        print(f"    {final['status']['phase']} after {time.monotonic() - began:.0f} s")
        print(
            render_objects(
                NODEMAINTENANCES, [final], datetime.datetime.now(datetime.UTC), wide=True
            )
        )
        skipped = return_skips(custom, manifest["metadata"]["name"])
        for vmid, reason in sorted(skipped.items()):
            print(f"    VM {vmid} stays away from home: {reason}")
        demo.step("pvesim ground truth")
        placement = {int(vmid): node for vmid, node in sim.state()["placement"].items()}
        away = sorted(vmid for vmid, node in placement.items() if homes.get(vmid) != node)
        print(f"    guests not on their own node: {away or 'none'}", end="")
        print(" (each with its reason above)" if away and set(away) <= set(skipped) else "")
        demo.step("stopping everything")
        ok = final["status"]["phase"] == "Succeeded" and set(away) <= set(skipped)
    return 0 if ok else 1


def main() -> int:
    return demo.run_main(run, "proxmigrate-demo-rolling-")


if __name__ == "__main__":
    sys.exit(main())
