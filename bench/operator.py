"""`python -m bench.operator`: the operator's own overhead, as a process on a real control plane.

1. Latency from creating a NodeDrain to its first migration POST (pvesim's ground truth has
   each task's start), p50/p99 over several runs.
2. Inventory sync with 500 to 5,000 VMs on 50 nodes: the time of one `PveClient.inventory()`
   (one `GET /cluster/resources`), and the operator's CPU and memory while it keeps that
   cluster's inventory in sync every `SYNC_INTERVAL` seconds.
3. Then `bench.operator_load`: kube-apiserver requests/s caused by the operator at rest and
   during a drain with 10 to 1,000 VMPlacements, reaction times, RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.devenv import (
    OperatorProcess,
    create_cluster_for_pvesim,
    ensure_namespace,
    wait_for,
)

from proxmigrate.api.constants import GROUP, VERSION
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.transport import TokenAuth
from pvesim.testing import PvesimProcess

TIME_SCALE = 20.0  # as the operator e2e tests: pacing durations are scaled to match
SYNC_INTERVAL = 5  # seconds between the operator's inventory reads in the sizing runs
OBSERVE_SECONDS = 30.0  # how long the operator's CPU is watched per size
CLK_TCK = 100  # /proc/<pid>/stat ticks per second on Linux


def scaled_policy() -> dict[str, Any]:
    """The default policy with its pacing durations in pvesim's scaled time."""
    return {
        "handshakePacing": {
            "handshakeSeconds": round(0.25 / TIME_SCALE, 4),
            "startSpreadSeconds": 5.0 / TIME_SCALE,
            "endSpreadSeconds": 2.0 / TIME_SCALE,
        }
    }


def _create(api: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )


def _delete(api: client.ApiClient, namespace: str, plural: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )


def _ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "proxmoxclusters", name
    )
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def drain_start_latency(plane: ControlPlane, operator: OperatorProcess, run: int) -> float:
    """Real seconds from creating a NodeDrain to its first migration task (POST) in PVE."""
    api = plane.api_client()
    namespace = f"bench-latency-{run}"
    args = ["--nodes", "4", "--vms-per-node", "16", "--seed", str(run)]
    with PvesimProcess(*args, "--time-scale", str(TIME_SCALE)) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_for(lambda: _ready(api, namespace, "lab"), 60, message=operator.tail())
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeDrain",
            "metadata": {"name": "drain"},
            "spec": {"clusterRef": {"name": "lab"}, "nodeName": "pve1", "localDisks": "migrate"},
        }
        created_at = float(sim.state()["now"])
        _create(api, namespace, "nodedrains", body)
        first = wait_for(
            lambda: min(
                (r["start"] for rs in sim.state()["migrations"].values() for r in rs),
                default=None,
            ),
            120,
            interval=0.05,
            message=f"first migration\n{operator.tail()}",
        )
        _delete(api, namespace, "nodedrains", "drain")
        _delete(api, namespace, "proxmoxclusters", "lab")
    return (float(first) - created_at) / TIME_SCALE


def _proc_figures(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, current RSS MiB, peak RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def inventory_cost(plane: ControlPlane, workdir: Path, vms: int) -> dict[str, float]:
    """One cluster of 50 nodes and `vms` VMs: client inventory time, operator CPU and memory."""
    per_node = vms // 50
    api = plane.api_client()
    namespace = f"bench-inventory-{vms}"
    log = workdir / f"operator-{vms}.log"
    ensure_namespace(api, namespace)
    with (
        PvesimProcess("--nodes", "50", "--vms-per-node", str(per_node), "--time-scale", "1") as sim,
        OperatorProcess(plane.kubeconfig, log, namespace=namespace) as operator,
    ):
        reader = PveClient(
            [f"{sim.host}:{sim.port}"],
            TokenAuth(sim.token_id, sim.token_secret),
            ca_bundle=sim.ca_cert,
        )
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            inventory = reader.inventory()
            timings.append(time.perf_counter() - began)
        assert len(inventory.vms) == per_node * 50
        pid = operator.process.pid if operator.process else 0
        create_cluster_for_pvesim(
            api, namespace, "lab", sim, scaled_policy(), sync_interval_seconds=SYNC_INTERVAL
        )
        wait_for(lambda: _ready(api, namespace, "lab"), 120, message=operator.tail())
        cpu_before, _, _ = _proc_figures(pid)
        time.sleep(OBSERVE_SECONDS)
        cpu_after, rss, peak = _proc_figures(pid)
        _delete(api, namespace, "proxmoxclusters", "lab")
    return {
        "vms": per_node * 50,
        "inventory_seconds_median": statistics.median(timings),
        "operator_cpu_share": (cpu_after - cpu_before) / OBSERVE_SECONDS,
        "operator_rss_mib": rss,
        "operator_peak_rss_mib": peak,
    }


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p99 of a handful of runs is their maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out")
    parser.add_argument("--runs", type=int, default=5, help="NodeDrain latency runs")
    parser.add_argument("--sizes", default="500,1000,2000,5000", help="VM counts on 50 nodes")
    parser.add_argument(
        "--load-placements",
        default="10,100,1000",
        help="VMPlacement counts for bench.operator_load (API requests/s, reaction, RSS); "
        "empty: skip it",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp, ControlPlane() as plane:
        workdir = Path(tmp)
        plane.apply_crds(
            [
                *sorted((REPO_ROOT / "crds").glob("*.yaml")),
                REPO_ROOT / "hack/kopf-peering-crds.yaml",
            ]
        )
        with OperatorProcess(plane.kubeconfig, workdir / "operator-latency.log") as operator:
            latencies = [drain_start_latency(plane, operator, run) for run in range(args.runs)]
        sizing = [inventory_cost(plane, workdir, vms) for vms in sizes]
    lines = [
        f"NodeDrain created -> first migration POST, {len(latencies)} runs "
        f"(pvesim at {TIME_SCALE:g}x, 4 nodes, 16 VMs on the drained one): "
        f"p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s "
        f"(all: {', '.join(f'{x:.2f}' for x in latencies)}).",
        "",
        f"| VMs on 50 nodes | one inventory() read s (median of 5) | operator CPU share "
        f"(sync every {SYNC_INTERVAL} s) | operator RSS MiB | operator peak RSS MiB |",
        "|---|---|---|---|---|",
        *(
            f"| {row['vms']:.0f} | {row['inventory_seconds_median']:.3f} "
            f"| {100 * row['operator_cpu_share']:.1f} % | {row['operator_rss_mib']:.0f} "
            f"| {row['operator_peak_rss_mib']:.0f} |"
            for row in sizing
        ),
    ]
    markdown = "\n".join(lines)
    print(markdown)
    (args.out / "operator.md").write_text(markdown + "\n")
    (args.out / "operator.json").write_text(
        json.dumps({"latencies": latencies, "sizing": sizing}, indent=1) + "\n"
    )
    if not args.load_placements:
        return 0
    from bench import operator_load  # imports this module: loaded only when run

    return operator_load.main(["--out", str(args.out), "--placements", args.load_placements])


if __name__ == "__main__":
    sys.exit(main())
