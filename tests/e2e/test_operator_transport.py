"""The transport rule end to end: a token PVE hides the datacenter options from."""

from __future__ import annotations

import base64
import itertools
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import (
    TIME_SCALE,
    create,
    get,
    scaled_policy,
    vmmigration,
    wait_cluster_decided,
)
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace

_namespaces = itertools.count()
# Everything the operator reads and does, except Sys.Audit on `/`.
TOKEN = "ops@pve!op"
ACL = "/vms:VM.Audit,VM.Migrate;/nodes:Sys.Audit;/storage:Datastore.Audit"


@pytest.fixture
def namespace() -> str:
    return f"e2e-transport-{next(_namespaces)}"


def test_a_token_without_sys_audit_on_root_is_refused_naming_the_privilege(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """PVE answers `GET /cluster/options` with 200 but without `migration` (pve-manager
    `PVE/API2/Cluster.pm` get_options): read as secure, the insecure datacenter below would
    carry guest memory in clear text."""
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "shared_storages": ["ceph"],
                "datacenter": {"migration": "type=insecure"},
                "nodes": [{"name": name, "memory_gib": 64} for name in ("pve1", "pve2")],
                "vms": [
                    {
                        "vmid": 100,
                        "node": "pve1",
                        "memory_gib": 2,
                        "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 8}],
                    }
                ],
            }
        )
    )
    api = control_plane.api_client()
    args = ["--config", str(config), "--time-scale", str(TIME_SCALE), "--token", f"{TOKEN}={ACL}"]
    with PvesimProcess(*args) as sim:
        ensure_namespace(api, namespace)
        data = {"tokenId": TOKEN, "tokenSecret": sim.tokens[TOKEN]}
        client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "ops"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            },
        )
        cluster = {
            "apiVersion": "proxmigrate.dev/v1alpha1",
            "kind": "ProxmoxCluster",
            "metadata": {"name": "lab"},
            "spec": {
                "endpoints": [f"{sim.host}:{sim.port}"],
                "credentialsSecretRef": {"name": "ops"},
                "tls": {"caBundle": Path(sim.ca_cert).read_text()},
                "migrationPolicy": scaled_policy(),
            },
        }
        create(api, namespace, "proxmoxclusters", cluster)
        ready = wait_cluster_decided(api, namespace, operator)
        assert (ready["status"], ready["reason"]) == ("False", "SysAuditMissing"), ready
        assert "Sys.Audit on /" in ready["message"] and "\n" not in ready["message"]
        status = get(api, namespace, "proxmoxclusters", "lab")["status"]
        assert status["clusterMigrationType"] == "unknown"
        create(api, namespace, "vmmigrations", vmmigration("held", 100, "pve2"))
        time.sleep(3)
        assert sim.state()["migrations"] == {}, "a migration ran with the transport unknown"
