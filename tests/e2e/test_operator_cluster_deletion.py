"""Deleting a ProxmoxCluster together with its running VMMigrations stops their PVE tasks
(operator process, real kube-apiserver, pvesim over HTTPS).

`kubectl delete -f dir/` sends the deletes one after the other, the ProxmoxCluster's first
when its file sorts first: the cluster's daemon is stopped before the VMMigrations' delete
handlers run, and those stop the tasks through the cluster's connection
(controllers/cluster_deletion.py keeps it open for them). A namespace deletion (one request;
kube-controller-manager's namespace controller deletes its kinds in no set order) too.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from proxmigrate.api.constants import GROUP, VERSION
from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import create, items, scaled_policy, vmmigration, wait_cluster_decided
from tests.e2e.test_operator_migrations import sim_args
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for

_namespaces = itertools.count()
MOVES = {100: ("pve1", "pve2"), 101: ("pve3", "pve4")}  # disjoint pairs: both start at once


@pytest.fixture
def namespace() -> str:
    return f"e2e-cluster-deletion-{next(_namespaces)}"


def _cluster_file(tmp_path: Path) -> Path:
    """Four nodes; two 400 GiB guests whose transfers take ~17 s at pvesim's time scale."""
    config: dict[str, Any] = {
        "pve_version": 8,
        "shared_storages": ["ceph"],
        "nodes": [
            {"name": f"pve{i}", "memory_gib": 512, "cpus": 64, "nic_gbit": 10} for i in range(1, 5)
        ],
        "vms": [
            {
                "vmid": vmid,
                "name": f"vm{vmid}",
                "node": source,
                "memory_gib": 401,
                "used_gib": 400,
                "dirty_mib_s": 5,
                "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 16}],
            }
            for vmid, (source, _) in MOVES.items()
        ],
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _gone(api: client.ApiClient, namespace: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(namespace)
    except client.ApiException as error:
        return error.status == 404
    return False


@pytest.mark.parametrize("how", ["kubectl", "namespace"])
def test_deleting_a_cluster_with_its_running_migrations_stops_their_tasks(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
    how: str,
) -> None:
    api = control_plane.api_client()
    custom = client.CustomObjectsApi(api)
    with PvesimProcess(*sim_args(_cluster_file(tmp_path))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_cluster_decided(api, namespace, operator)
        for vmid, (_, target) in MOVES.items():
            create(api, namespace, "vmmigrations", vmmigration(f"m{vmid}", vmid, target))

        def transferring() -> bool:
            runs = sim.state()["migrations"]
            return all(any(r["transfer_start"] for r in runs.get(str(v), [])) for v in MOVES)

        wait_for(transferring, timeout=30, message=f"both transfers to start\n{operator.tail()}")
        if how == "kubectl":  # as `kubectl delete -f dir/`, the cluster's file first
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "proxmoxclusters", "lab"
            )
            custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, "vmmigrations"
            )
        else:
            client.CoreV1Api(api).delete_namespace(namespace)
        deleted_at = time.monotonic()

        def ended() -> list[dict[str, Any]] | None:
            runs = [sim.state()["migrations"][str(v)][-1] for v in MOVES]
            return runs if all(r["end"] is not None for r in runs) else None

        runs = wait_for(ended, timeout=10, message=f"both tasks to end\n{operator.tail()}")
        took = time.monotonic() - deleted_at
        assert [(r["outcome"], r["reason"]) for r in runs] == [("failed", "stopped")] * 2, runs
        state = sim.state()
        assert {vmid: state["placement"][str(vmid)] for vmid in MOVES} == {
            vmid: source for vmid, (source, _) in MOVES.items()
        }
        assert state["locks"] == {}
        wait_for(
            lambda: (
                not items(api, namespace, "vmmigrations")
                and not items(api, namespace, "proxmoxclusters")
                and (how == "kubectl" or _gone(api, namespace))
            ),
            timeout=20,
            message=f"the objects to go\n{operator.tail()}",
        )
        assert took < 8.0, took  # the transfers had ~15 s to go
        assert "no longer followed" not in operator.log_path.read_text()
