"""The operator as a process, against the real kube-apiserver and pvesim over HTTPS."""

from __future__ import annotations

import base64
import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import (
    TIME_SCALE,
    condition,
    create,
    get,
    items,
    scaled_policy,
    vmmigration,
    wait_cluster_decided,
)
from tests.support.controlplane import ControlPlane
from tests.support.devenv import (
    OperatorProcess,
    create_cluster_for_pvesim,
    ensure_namespace,
    wait_for,
)

_namespaces = itertools.count()
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@pytest.fixture
def namespace() -> str:
    return f"e2e-mig-{next(_namespaces)}"


def cluster_file(tmp_path: Path, vms: int, used_gib: float, **datacenter: str) -> Path:
    """Three nodes; `vms` VMs on pve1, all to be moved to pve2."""
    config: dict[str, Any] = {
        "pve_version": 8,
        "shared_storages": ["ceph"],
        "datacenter": datacenter,
        "nodes": [
            {"name": name, "memory_gib": 512, "cpus": 64, "nic_gbit": 10}
            for name in ("pve1", "pve2", "pve3")
        ],
        "vms": [
            {
                "vmid": 100 + index,
                "name": f"vm{index}",
                "node": "pve1",
                "memory_gib": max(2, int(used_gib) + 1),
                "used_gib": used_gib,
                "dirty_mib_s": 5,
                "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 16}],
            }
            for index in range(vms)
        ],
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sim_args(config: Path) -> list[str]:
    return ["--config", str(config), "--seed", "7", "--time-scale", str(TIME_SCALE)]


def wait_all_terminal(
    api: client.ApiClient, namespace: str, count: int, timeout: float, operator: OperatorProcess
) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        found = items(api, namespace, "vmmigrations")
        ended = [m for m in found if m.get("status", {}).get("phase") in TERMINAL]
        return found if len(found) == count and len(ended) == count else None

    return wait_for(done, timeout=timeout, message=f"{count} migrations to end\n{operator.tail()}")


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_single_migration_succeeds(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=2, used_gib=1))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        ready = wait_cluster_decided(api, namespace, operator)
        assert (ready["status"], ready["reason"]) == ("True", "Connected"), ready
        cluster = get(api, namespace, "proxmoxclusters", "lab")["status"]
        assert (cluster["nodesOnline"], cluster["vmCount"]) == ("3/3", 2)
        create(api, namespace, "vmmigrations", vmmigration("move", 100, "pve2"))
        (done,) = wait_all_terminal(api, namespace, 1, 60, operator)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["upid"].startswith("UPID:pve1:")
        assert done["status"]["sourceNode"] == "pve1"
        assert done["status"]["attempts"][0]["outcome"] == "Succeeded"
        state = sim.state()
        assert state["placement"]["100"] == "pve2"
        assert len(state["migrations"]["100"]) == 1


def test_forty_migrations_to_one_target_paced_without_ssh_drops(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """Default sshd 10:30:100 on the target, maxParallel 32: pacing, not retries, avoids drops.

    Without the stream rules (rate floor, convergence), which would hold one 10 Gbit/s source
    at about 8 streams: this is about how many migrations one target's sshd takes at once."""
    api = control_plane.api_client()
    policy = scaled_policy(maxParallel=32, minStreamRateMiBps=0, convergenceMargin=0)
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=40, used_gib=4))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, policy)
        wait_cluster_decided(api, namespace, operator)
        for index in range(40):
            create(api, namespace, "vmmigrations", vmmigration(f"m{index}", 100 + index, "pve2"))
        ended = wait_all_terminal(api, namespace, 40, 180, operator)
        phases = {m["metadata"]["name"]: m["status"]["phase"] for m in ended}
        assert set(phases.values()) == {"Succeeded"}, phases
        state = sim.state()
        assert state["ssh"]["pve2"]["drops"] == 0
        assert state["ssh"]["pve2"]["peak_preauth"] < 10
        records = state["migrations"]
        assert all(len(records[str(100 + i)]) == 1 for i in range(40)), "a VM migrated twice"
        assert all(state["placement"][str(100 + i)] == "pve2" for i in range(40))
        assert state["peak_inflight_migrations"] > 8  # more than the usual "cap at 8" advice
        text = operator.metrics()
        cluster = f"{namespace}/lab"
        assert (
            metric_value(
                text,
                "proxmigrate_migrations_total",
                cluster=cluster,
                target="pve2",
                result="succeeded",
            )
            == 40
        )
        assert metric_value(text, "proxmigrate_ssh_drops_total", cluster=cluster) == 0


def test_sigkill_restart_resumes_without_duplicates(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    namespace = "e2e-restart"
    log = tmp_path / "operator.log"
    ensure_namespace(api, namespace)
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=12, used_gib=12))) as sim:
        first = OperatorProcess(control_plane.kubeconfig, log, namespace=namespace).start()
        try:
            create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy(maxParallel=6))
            wait_cluster_decided(api, namespace, first)
            for index in range(12):
                create(
                    api, namespace, "vmmigrations", vmmigration(f"m{index}", 100 + index, "pve2")
                )

            def some_running() -> bool:
                found = items(api, namespace, "vmmigrations")
                return sum(1 for m in found if m.get("status", {}).get("upid")) >= 3

            wait_for(some_running, timeout=60, message=f"running migrations\n{first.tail()}")
        finally:
            first.kill()
        killed_at = time.monotonic()
        with OperatorProcess(control_plane.kubeconfig, log, namespace=namespace) as second:
            ended = wait_all_terminal(api, namespace, 12, 240, second)
        assert time.monotonic() - killed_at > 0
        assert {m["status"]["phase"] for m in ended} == {"Succeeded"}, [
            (m["metadata"]["name"], m["status"].get("message")) for m in ended
        ]
        state = sim.state()
        for index in range(12):
            runs = state["migrations"][str(100 + index)]
            assert len(runs) == 1, f"VM {100 + index} migrated {len(runs)} times: {runs}"
            assert state["placement"][str(100 + index)] == "pve2"


def _secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    ensure_namespace(api, namespace)
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def _cluster(
    name: str, endpoints: list[str], secret: str, ca: str, **policy: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "proxmigrate.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"name": name},
        "spec": {
            "endpoints": endpoints,
            "credentialsSecretRef": {"name": secret},
            "tls": {"caBundle": ca},
            "migrationPolicy": policy,
        },
    }


def test_bad_clusters_get_false_ready_naming_the_cause(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=1))) as sim:
        endpoint = f"{sim.host}:{sim.port}"
        ca = Path(sim.ca_cert).read_text()
        _secret(api, namespace, "wrong", {"tokenId": sim.token_id, "tokenSecret": "not-it"})
        _secret(api, namespace, "right", {"tokenId": sim.token_id, "tokenSecret": sim.token_secret})
        create(api, namespace, "proxmoxclusters", _cluster("badtoken", [endpoint], "wrong", ca))
        create(api, namespace, "proxmoxclusters", _cluster("nowhere", ["127.0.0.1:1"], "right", ca))
        create(
            api,
            namespace,
            "proxmoxclusters",
            _cluster("insecure", [endpoint], "right", ca, type="insecure"),
        )
        create(api, namespace, "proxmoxclusters", _cluster("nosecret", [endpoint], "missing", ca))
        expected = {
            "badtoken": ("AuthenticationFailed", r"token"),
            "nowhere": ("Unreachable", r"127\.0\.0\.1:1"),
            "insecure": ("InsecureNotAllowed", r"allowInsecure"),
            "nosecret": ("SecretNotFound", r"missing"),
        }
        for name, (reason, pattern) in expected.items():
            ready = wait_for(
                lambda n=name: condition(get(api, namespace, "proxmoxclusters", n), "Ready"),
                timeout=40,
                message=f"{name} Ready condition\n{operator.tail()}",
            )
            assert (ready["status"], ready["reason"]) == ("False", reason), (name, ready)
            assert re.search(pattern, ready["message"]), (name, ready["message"])
        # Rotating the Secret to a valid token heals the cluster without a restart.
        fixed = base64.b64encode(sim.token_secret.encode()).decode()
        client.CoreV1Api(api).patch_namespaced_secret(
            "wrong", namespace, {"data": {"tokenSecret": fixed}}
        )
        wait_for(
            lambda: (
                (c := condition(get(api, namespace, "proxmoxclusters", "badtoken"), "Ready"))
                and c["status"] == "True"
            ),
            timeout=40,
            message=f"badtoken to recover after the Secret was fixed\n{operator.tail()}",
        )


def test_datacenter_insecure_migration_is_refused_with_token(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    config = cluster_file(tmp_path, vms=1, used_gib=1, migration="type=insecure")
    with PvesimProcess(*sim_args(config)) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        ready = wait_cluster_decided(api, namespace, operator)
        assert (ready["status"], ready["reason"]) == ("False", "ClusterMigrationInsecure")
        create(api, namespace, "vmmigrations", vmmigration("held", 100, "pve2"))
        time.sleep(3)
        assert sim.state()["migrations"] == {}, "a migration ran over an insecure transport"


def test_migration_of_unknown_vm_or_node_fails_clearly(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=1))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_cluster_decided(api, namespace, operator)
        create(api, namespace, "vmmigrations", vmmigration("novm", 4242, "pve2"))
        create(api, namespace, "vmmigrations", vmmigration("nonode", 100, "pve9"))
        ended = {
            m["metadata"]["name"]: m["status"]
            for m in wait_all_terminal(api, namespace, 2, 30, operator)
        }
        assert ended["novm"]["phase"] == "Failed"
        assert ended["novm"]["reason"] == "vm_not_found"
        assert "VM 4242 does not exist" in ended["novm"]["message"]
        assert ended["nonode"]["phase"] == "Failed"
        assert "'pve9' is not in cluster" in ended["nonode"]["message"]
        assert sim.state()["migrations"] == {}


def test_deleting_a_running_migration_stops_its_task(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    custom = client.CustomObjectsApi(api)
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=200))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_cluster_decided(api, namespace, operator)
        create(api, namespace, "vmmigrations", vmmigration("long", 100, "pve2"))
        wait_for(
            lambda: get(api, namespace, "vmmigrations", "long").get("status", {}).get("upid"),
            timeout=30,
            message=f"the migration to start\n{operator.tail()}",
        )
        custom.delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "vmmigrations", "long"
        )
        wait_for(
            lambda: not items(api, namespace, "vmmigrations"),
            timeout=30,
            message=f"the VMMigration to go\n{operator.tail()}",
        )
        (run,) = wait_for(
            lambda: [r for r in sim.state()["migrations"].get("100", []) if r.get("end")],
            timeout=30,
            message="the PVE task to stop",
        )
        assert run["outcome"] != "ok" and run["reason"] == "stopped", run
        assert sim.state()["placement"]["100"] == "pve1"
        events = client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector="involvedObject.name=long"
        )
        assert "Cancelled" in {event.reason for event in events.items}


def test_root_ticket_auth_sends_secure_explicitly_even_when_the_datacenter_says_insecure(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """Only a root@pam ticket may choose the transport per request; the operator then asks
    for `secure` itself instead of refusing to migrate."""
    api = control_plane.api_client()
    config = cluster_file(tmp_path, vms=1, used_gib=1, migration="type=insecure")
    with PvesimProcess(*sim_args(config)) as sim:
        _secret(api, namespace, "root", {"username": "root@pam", "password": sim.password})
        ca = Path(sim.ca_cert).read_text()
        body = _cluster("lab", [f"{sim.host}:{sim.port}"], "root", ca, **scaled_policy())
        create(api, namespace, "proxmoxclusters", body)
        ready = wait_cluster_decided(api, namespace, operator)
        assert (ready["status"], ready["reason"]) == ("True", "Connected"), ready
        assert get(api, namespace, "proxmoxclusters", "lab")["status"]["authMethod"] == "ticket"
        create(api, namespace, "vmmigrations", vmmigration("move", 100, "pve2"))
        (done,) = wait_all_terminal(api, namespace, 1, 60, operator)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        (run,) = sim.state()["migrations"]["100"]
        assert run["mode"] == "secure", run
