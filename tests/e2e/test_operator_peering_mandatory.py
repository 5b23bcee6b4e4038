"""A replica started with peering configured does nothing until the peering object exists."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import condition, get, wait_cluster_decided
from tests.e2e.test_operator_migrations import cluster_file, sim_args
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, ensure_namespace

NAMESPACE = "e2e-peering-missing"
PEERING = "proxmigrate"


def test_no_replica_acts_without_its_peering_object(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    ensure_namespace(api, NAMESPACE)
    with (
        PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=1))) as sim,
        OperatorProcess(
            control_plane.kubeconfig,
            tmp_path / "replica.log",
            namespace=NAMESPACE,
            peering=PEERING,
        ) as replica,
    ):
        create_cluster_for_pvesim(api, NAMESPACE, "lab", sim)
        time.sleep(8)  # a replica that acts connects and writes Ready within a second or two
        assert condition(get(api, NAMESPACE, "proxmoxclusters", "lab"), "Ready") is None, (
            replica.tail()
        )
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kopf.dev",
            "v1",
            NAMESPACE,
            "kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
        )
        assert wait_cluster_decided(api, NAMESPACE, replica)["status"] == "True"
