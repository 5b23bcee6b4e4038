"""Deleting a running VMMigration: the operator stops the PVE task and reports what the stop
left behind (operator process, real kube-apiserver, pvesim over HTTPS).

PVE's DELETE of a task sends SIGTERM to the worker's process group and SIGKILL 5 s later,
and answers only then (pve-common `src/PVE/RESTEnvironment.pm` check_worker,
kill_process_group). The migration worker's phase-2 cleanup (qemu-server
`src/PVE/QemuMigrate.pm` phase2_cleanup) runs `qm stop` of the incoming VM and, for a secure
migration, `rm -f` of its socket over two more ssh connections; with the target unreachable
each waits for ssh's connect to fail, so SIGKILL cuts the cleanup short: the task ends
without a `TASK` line (`unexpected status`, pve-common `src/PVE/UPID.pm` read_status) and
the target may keep the incoming QEMU, which no API call shows.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import (
    create,
    get,
    items,
    scaled_policy,
    vmmigration,
    wait_cluster_decided,
)
from tests.e2e.test_operator_migrations import cluster_file, sim_args
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-cancel-{next(_namespaces)}"


def test_a_stop_killed_before_its_cleanup_ended_is_reported_with_what_to_do(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=200))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_cluster_decided(api, namespace, operator)
        create(api, namespace, "vmmigrations", vmmigration("long", 100, "pve2"))
        wait_for(
            lambda: [r for r in sim.state()["migrations"].get("100", []) if r["transfer_start"]],
            timeout=30,
            message=f"the transfer to start\n{operator.tail()}",
        )
        sim.fault(node_offline="pve2")  # its cleanup's ssh connections now take 3 s each
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "vmmigrations", "long"
        )
        wait_for(
            lambda: not items(api, namespace, "vmmigrations"),
            timeout=30,
            message=f"the VMMigration to go\n{operator.tail()}",
        )
        (run,) = sim.state()["migrations"]["100"]
        assert (run["outcome"], run["reason"], run["target_qemu_left"]) == (
            "killed",
            "stopped",
            True,
        ), run
        assert sim.state()["placement"]["100"] == "pve1"
        assert "100" not in sim.state()["locks"]  # phase2_cleanup unlocked it first
        (event,) = wait_for(
            lambda: [
                e
                for e in client.CoreV1Api(api)
                .list_namespaced_event(namespace, field_selector="involvedObject.name=long")
                .items
                if e.reason == "Cancelled"
            ],
            timeout=10,
            message=f"the Cancelled event\n{operator.tail()}",
        )
        assert event.type == "Warning", event.message
        assert "PVE killed the task before its cleanup ended" in event.message
        assert "an incoming VM 100 may still run on pve2" in event.message
        assert "lock" not in event.message


def test_a_clean_stop_leaves_the_vm_unlocked_on_its_source(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    with PvesimProcess(*sim_args(cluster_file(tmp_path, vms=1, used_gib=200))) as sim:
        create_cluster_for_pvesim(api, namespace, "lab", sim, scaled_policy())
        wait_cluster_decided(api, namespace, operator)
        create(api, namespace, "vmmigrations", vmmigration("long", 100, "pve2"))
        wait_for(
            lambda: get(api, namespace, "vmmigrations", "long").get("status", {}).get("upid"),
            timeout=30,
            message=f"the migration to start\n{operator.tail()}",
        )
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "proxmigrate.dev", "v1alpha1", namespace, "vmmigrations", "long"
        )
        (event,) = wait_for(
            lambda: [
                e
                for e in client.CoreV1Api(api)
                .list_namespaced_event(namespace, field_selector="involvedObject.name=long")
                .items
                if e.reason == "Cancelled"
            ],
            timeout=30,
            message=f"the Cancelled event\n{operator.tail()}",
        )
        # the DELETE answered once the worker was gone: the task had ended when we looked
        (run,) = sim.state()["migrations"]["100"]
        assert run["end"] is not None and run["outcome"] == "failed", run
        assert event.type == "Normal" and event.message.endswith(" stopped"), event.message
        assert sim.state()["placement"]["100"] == "pve1" and sim.state()["locks"] == {}
