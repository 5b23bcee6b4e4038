"""Two replicas with kopf peering: one acts, the other takes over when it dies."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import create, items, scaled_policy, vmmigration, wait_cluster_decided
from tests.e2e.test_operator_migrations import cluster_file, sim_args, wait_all_terminal
from tests.support.controlplane import ControlPlane
from tests.support.devenv import (
    OperatorProcess,
    create_cluster_for_pvesim,
    ensure_namespace,
    wait_for,
)

NAMESPACE = "e2e-peering"
PEERING = "proxmigrate"


def test_standby_takes_over_after_the_active_replica_is_killed(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    ensure_namespace(api, NAMESPACE)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        NAMESPACE,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )

    def replica(priority: int) -> OperatorProcess:
        return OperatorProcess(
            control_plane.kubeconfig,
            tmp_path / f"replica-{priority}.log",
            namespace=NAMESPACE,
            peering=PEERING,
            priority=priority,
            peering_lifetime_seconds=5,
        )

    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=8, used_gib=12))) as sim:
        active, standby = replica(10).start(), replica(0)
        try:
            standby.start()
            time.sleep(3)  # peering is mandatory: the standby starts paused and stays paused
            assert "Resuming operations" not in standby.tail(400), standby.tail()
            create_cluster_for_pvesim(api, NAMESPACE, "lab", sim, scaled_policy(maxParallel=4))
            wait_cluster_decided(api, NAMESPACE, active)
            for index in range(8):
                create(
                    api, NAMESPACE, "vmmigrations", vmmigration(f"m{index}", 100 + index, "pve2")
                )
            wait_for(
                lambda: (
                    sum(
                        1
                        for m in items(api, NAMESPACE, "vmmigrations")
                        if m.get("status", {}).get("upid")
                    )
                    >= 2
                ),
                timeout=60,
                message=f"migrations to start\n{active.tail()}",
            )
            assert "resumed" not in standby.tail(400)
            active.kill()
            ended = wait_all_terminal(api, NAMESPACE, 8, 180, standby)
        finally:
            active.stop()
            standby.stop()
        assert {m["status"]["phase"] for m in ended} == {"Succeeded"}
        assert "Resuming operations" in standby.tail(2000)
        state = sim.state()
        for index in range(8):
            assert len(state["migrations"][str(100 + index)]) == 1, f"VM {100 + index} twice"
