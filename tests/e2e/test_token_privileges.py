"""The operator with a least-privilege API token: exactly what docs/token.md lists, no more.

pvesim enforces PVE's privileges (the apidoc `permissions` of every route, the filters PVE's
handlers apply: pvesim/permissions.py), so a drain that succeeds here with a privilege-separated
token holding only docs/token.md's role proves the list suffices; taking any one privilege away
must make the operator refuse or fail the part that needs it.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from types import SimpleNamespace
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
from tests.e2e.test_operator_drains import nodedrain, wait_phase
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for

TOKEN = "proxmigrate@pve!operator"
_namespaces = itertools.count()


def documented_privileges() -> list[str]:
    """The role docs/token.md tells users to create (`pveum role add ... --privs "..."`)."""
    text = (REPO_ROOT / "docs" / "token.md").read_text()
    match = re.search(r'pveum role add ProxmigrateOperator --privs "([^"]+)"', text)
    assert match, "docs/token.md lost its pveum role add line"
    return match[1].split()


@pytest.fixture
def namespace() -> str:
    return f"e2e-token-{next(_namespaces)}"


def start_sim(tmp_path: Path, privileges: list[str], vms: list[dict[str, Any]]) -> PvesimProcess:
    """Three nodes; a privilege-separated token whose user and token ACLs on / grant
    `privileges` (as docs/token.md's `pveum acl modify /` lines do)."""
    acl = {"/": privileges}
    config = {
        "pve_version": 9,
        "shared_storages": ["ceph"],
        "datacenter": {"migration": "type=secure"},
        "nodes": [{"name": n, "memory_gib": 256, "cpus": 32} for n in ("pve1", "pve2", "pve3")],
        "vms": vms,
        "access": {
            "users": {TOKEN.partition("!")[0]: acl},
            "tokens": {TOKEN: {"privsep": 1, "acl": acl}},
        },
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return PvesimProcess("--config", str(path), "--seed", "3", "--time-scale", str(TIME_SCALE))


def guest(vmid: int, **extra: Any) -> dict[str, Any]:
    return {
        "vmid": vmid,
        "node": "pve1",
        "memory_gib": 2,
        "used_gib": 1,
        "dirty_mib_s": 5,
        "disks": [{"key": "scsi0", "storage": "ceph", "size_gib": 16}],
        **extra,
    }


def connect(api: client.ApiClient, namespace: str, sim: PvesimProcess) -> None:
    """A ProxmoxCluster `lab` that logs in with the restricted token, not the root one."""
    as_token = SimpleNamespace(
        host=sim.host,
        port=sim.port,
        ca_cert=sim.ca_cert,
        token_id=TOKEN,
        token_secret=sim.tokens[TOKEN],
    )
    create_cluster_for_pvesim(api, namespace, "lab", as_token, scaled_policy())


def test_a_drain_needs_only_the_documented_privileges(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    vms = [guest(100), guest(101), guest(102, running=False), guest(103, ha=True)]
    with start_sim(tmp_path, documented_privileges(), vms) as sim:
        connect(api, namespace, sim)
        ready = wait_cluster_decided(api, namespace, operator)
        assert ready["status"] == "True", ready
        create(api, namespace, "nodedrains", nodedrain("pve1", "pve1"))
        status = wait_phase(api, namespace, "pve1", {"Drained", "Failed"}, operator, timeout=120)
        state = sim.state()
    assert status["phase"] == "Drained", status
    children = items(api, namespace, "vmmigrations")
    assert sorted(c["spec"]["vmid"] for c in children) == [100, 101, 102, 103]
    assert all(c["status"]["phase"] == "Succeeded" for c in children), children
    assert not [v for v, node in state["placement"].items() if node == "pve1"]


# What each privilege is for, and what must happen without it (docs/token.md's table).
WITHOUT = {
    # no guest is visible in /cluster/resources (API2/Cluster.pm resources: VM.Audit)
    "VM.Audit": "VM 100 does not exist",
    # POST .../migrate: the apidoc check [perm, /vms/{vmid}, [VM.Migrate]]
    "VM.Migrate": "Permission check failed (/vms/100, VM.Migrate)",
    # /cluster/options without `migration` (API2/Cluster.pm get_options): refused, not assumed
    "Sys.Audit": "Sys.Audit",
}


@pytest.mark.parametrize("missing", sorted(WITHOUT))
def test_without_one_documented_privilege_the_operator_refuses(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
    missing: str,
) -> None:
    privileges = [p for p in documented_privileges() if p != missing]
    assert len(privileges) == len(documented_privileges()) - 1
    api = control_plane.api_client()
    with start_sim(tmp_path, privileges, [guest(100)]) as sim:
        connect(api, namespace, sim)
        ready = wait_cluster_decided(api, namespace, operator)
        create(api, namespace, "vmmigrations", vmmigration("m100", 100, "pve2"))
        if missing == "Sys.Audit":
            assert ready["status"] == "False" and WITHOUT[missing] in ready["message"], ready
            found = wait_for(
                lambda: get(api, namespace, "vmmigrations", "m100").get("status"),
                timeout=60,
                message=f"VMMigration to be seen\n{operator.tail()}",
            )
            assert found["phase"] == "Queued", found
            time.sleep(3)  # 60 simulated seconds: the operator keeps it queued, PVE sees nothing
            still = get(api, namespace, "vmmigrations", "m100")["status"]
            assert still["phase"] == "Queued", still
        else:
            assert ready["status"] == "True", ready
            found = wait_for(
                lambda: (
                    (m := get(api, namespace, "vmmigrations", "m100"))
                    .get("status", {})
                    .get("phase")
                    == "Failed"
                    and m
                ),
                timeout=60,
                message=f"VMMigration to fail\n{operator.tail()}",
            )
            text = str(found["status"]) + str(condition(found, "Ready"))
            assert WITHOUT[missing] in text, found["status"]
        state = sim.state()
    assert state["placement"]["100"] == "pve1"
    assert not state["migrations"]
