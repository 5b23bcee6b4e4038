"""`make demo`: drain a node of a simulated Proxmox VE cluster with the real operator.

Says what it will do and how long that takes, provisions what it runs (hack/provision.py:
kube-apiserver, etcd, PVE's API schema; built once), starts a local kube-apiserver + etcd,
pvesim (examples/demo/pvesim-cluster.yaml, 30x simulated time) and the operator as a
process; applies the ProxmoxCluster and NodeDrain of examples/demo/, shows the drain's
progress, then prints the outcome, pvesim's ground truth and a few metrics. Everything it
starts is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "operator"))
sys.path.insert(0, str(REPO_ROOT))

from kubernetes import client  # noqa: E402
from tests.support.controlplane import (  # noqa: E402
    KOPF_PEERING_CRDS,
    ControlPlane,
    provisioning,
)
from tests.support.devenv import OperatorProcess, ensure_namespace, wait_for  # noqa: E402

from proxmigrate.api.constants import (  # noqa: E402
    GROUP,
    NODEDRAINS,
    PROXMOXCLUSTERS,
    VERSION,
    VMMIGRATIONS,
)
from proxmigrate.kubectl.errors import exit_code  # noqa: E402
from proxmigrate.kubectl.progress import follow_drain  # noqa: E402
from proxmigrate.kubectl.tables import render_drains, render_summary  # noqa: E402
from pvesim.testing import PvesimProcess  # noqa: E402

DEMO = REPO_ROOT / "examples" / "demo"
NAMESPACE = "demo"
TIME_SCALE = 30
DRAIN_TIMEOUT = 150.0  # real seconds
# Measured on 2 cores with everything provisioned: `make demo` to "nothing left running".
DEMO_SECONDS = 16
METRIC_PREFIXES = (
    "proxmigrate_migrations_total",
    "proxmigrate_ssh_drops_total",
    "proxmigrate_drain_progress_ratio",
    "proxmigrate_drain_remaining_vms",
    "proxmigrate_migration_duration_seconds_count",
    "proxmigrate_migration_duration_seconds_sum",
)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def build_note() -> str:
    """`, after building X once (about T on 2 cores)` while the demos' components are not
    built yet, else nothing."""
    provision = provisioning()
    missing = [c for c in provision.for_targets(["demo"]) if provision.existing(c) is None]
    if not missing:
        return ""
    build = provision.estimate(missing, provision.jobs())
    return (
        f", after building {', '.join(c.name for c in missing)} once "
        f"(about {provision.duration(build)} on 2 cores)"
    )


def introduce() -> None:
    """What the demo does and how long it takes, before anything starts or builds."""
    cluster = yaml.safe_load((DEMO / "pvesim-cluster.yaml").read_text())
    node = yaml.safe_load((DEMO / "nodedrain.yaml").read_text())["spec"]["nodeName"]
    on_node = sum(1 for vm in cluster["vms"] if vm["node"] == node)
    print(
        f"make demo: the operator drains {node} ({on_node} VMs) of a simulated Proxmox VE "
        f"cluster ({len(cluster['nodes'])} nodes, {len(cluster['vms'])} VMs, pvesim at "
        f"{TIME_SCALE}x real time) on a local kube-apiserver + etcd; about "
        f"{provisioning().duration(DEMO_SECONDS)}{build_note()}",
        flush=True,
    )


def apply_cluster(api: client.ApiClient, sim: PvesimProcess) -> str:
    """examples/demo/proxmoxcluster.yaml with pvesim's endpoint, token and CA filled in."""
    secret, cluster = yaml.safe_load_all((DEMO / "proxmoxcluster.yaml").read_text())
    secret["data"] = {
        key: base64.b64encode(value.encode()).decode()
        for key, value in {"tokenId": sim.token_id, "tokenSecret": sim.token_secret}.items()
    }
    del secret["stringData"]
    client.CoreV1Api(api).create_namespaced_secret(NAMESPACE, secret)
    cluster["spec"]["endpoints"] = [f"{sim.host}:{sim.port}"]
    cluster["spec"]["tls"]["caBundle"] = Path(sim.ca_cert).read_text()
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PROXMOXCLUSTERS, cluster)
    return str(cluster["metadata"]["name"])


def wait_connected(api: client.ApiClient, name: str, operator: OperatorProcess) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)

    def ready() -> dict[str, Any] | None:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PROXMOXCLUSTERS, name)
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return dict(body["status"])
        return None

    status: dict[str, Any] = wait_for(
        ready, timeout=60, interval=0.2, message=f"ProxmoxCluster {name} Ready\n{operator.tail()}"
    )
    return status


def ground_truth(state: dict[str, Any]) -> list[str]:
    runs = [run for per_vm in state["migrations"].values() for run in per_vm]
    outcomes: dict[str, int] = {}
    for run in runs:
        outcomes[run["outcome"]] = outcomes.get(run["outcome"], 0) + 1
    drops = {node: info["drops"] for node, info in state["ssh"].items()}
    on_pve1 = sorted(int(vmid) for vmid, node in state["placement"].items() if node == "pve1")
    by_outcome = ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items()))
    return [
        f"migration tasks: {len(runs)} ({by_outcome})",
        f"peak migrations in flight: {state.get('peak_inflight_migrations')}",
        f"SSH connections dropped by sshd (MaxStartups): {sum(drops.values())} {drops}",
        f"guests left on pve1: {on_pve1 or 'none'}",
    ]


def report_unfinished(custom: client.CustomObjectsApi, drain: str) -> None:
    """The guests still in flight and what their VMMigrations say, for a stalled demo."""
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, NODEDRAINS, drain)
    for entry in (status.get("status") or {}).get("vms") or []:
        if entry["phase"] in ("Pending", "Queued", "Migrating") and entry.get("migration"):
            child = (
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, VMMIGRATIONS, entry["migration"]
                ).get("status")
                or {}
            )
            print(f"    VM {entry['vmid']} {entry['phase']}: {child.get('message')}")


def metric_lines(operator: OperatorProcess) -> list[str]:
    return [
        line
        for line in operator.metrics().splitlines()
        if line.startswith(METRIC_PREFIXES) and not line.startswith("#")
    ]


def wait_planned(read: Callable[[], dict[str, Any]]) -> None:
    """Until the operator has counted the drain's VMs, so the first progress line is real."""
    wait_for(
        lambda: "total" in (read().get("status") or {}),
        timeout=60,
        interval=0.2,
        message="the operator to plan the drain",
    )


def run(workdir: Path) -> int:
    introduce()
    provision = provisioning()
    provision.ensure(provision.for_targets(["demo"]), out=sys.stdout)
    with contextlib.ExitStack() as stack:
        step(
            "starting a local kube-apiserver + etcd, and pvesim with "
            f"examples/demo/pvesim-cluster.yaml at {TIME_SCALE}x simulated time"
        )
        plane = ControlPlane()
        stack.callback(plane.stop)
        sim = PvesimProcess(
            "--config",
            str(DEMO / "pvesim-cluster.yaml"),
            "--seed",
            "1",
            "--time-scale",
            str(TIME_SCALE),
        )
        stack.callback(sim.stop)
        # Independent, and each spends seconds starting: side by side saves those seconds.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            starts: list[concurrent.futures.Future[Any]] = [
                pool.submit(plane.start),
                pool.submit(sim.__enter__),
            ]
        for started in starts:
            started.result()
        plane.apply_crds([*sorted((REPO_ROOT / "crds").glob("*.yaml")), KOPF_PEERING_CRDS])
        api = plane.api_client()
        ensure_namespace(api, NAMESPACE)
        # Applied before the operator starts, which then connects as it comes up.
        step("applying examples/demo/proxmoxcluster.yaml")
        cluster = apply_cluster(api, sim)
        step("starting the operator")
        operator = OperatorProcess(plane.kubeconfig, workdir / "operator.log", namespace=NAMESPACE)
        stack.enter_context(operator)
        status = wait_connected(api, cluster, operator)
        print(f"    {status.get('nodesOnline')} nodes online, {status.get('vmCount')} VMs")
        step("applying examples/demo/nodedrain.yaml")
        drain = yaml.safe_load((DEMO / "nodedrain.yaml").read_text())
        name = drain["metadata"]["name"]
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, NODEDRAINS, drain)
        deadline = time.monotonic() + DRAIN_TIMEOUT

        def read() -> dict[str, Any]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain not finished after {DRAIN_TIMEOUT:.0f} s")
            return dict(
                custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, NODEDRAINS, name)
            )

        print(f"    (rates are per real second; pvesim runs {TIME_SCALE}x faster than real time)")
        try:
            wait_planned(read)
            final = follow_drain(read, sys.stdout, live=sys.stdout.isatty())
        except TimeoutError:
            report_unfinished(custom, name)
            raise
        print()
        print(render_summary(name, final))
        print(render_drains([read()]))
        step("pvesim ground truth")
        for line in ground_truth(sim.state()):
            print(f"    {line}")
        step("operator metrics")
        for line in metric_lines(operator):
            print(f"    {line}")
        step("stopping everything")
        code = exit_code(final.get("phase"))
    return code


def run_main(run: Callable[[Path], int], prefix: str) -> int:
    """Run a demo in a temporary directory: one-line errors with the operator log's tail."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        try:
            code = run(workdir)
        except KeyboardInterrupt:
            print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
            return 130
        except Exception as error:
            log = workdir / "operator.log"
            tail = (
                "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                if log.exists()
                else ""
            )
            print(f"demo failed: {error}" + (f"\n{tail}" if tail else ""), file=sys.stderr)
            return 1
    print(f"done in {time.monotonic() - began:.0f} s; nothing left running")
    return code


def main() -> int:
    return run_main(run, "proxmigrate-demo-")


if __name__ == "__main__":
    sys.exit(main())
