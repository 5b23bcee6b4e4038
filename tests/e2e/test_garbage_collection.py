"""ownerReferences, garbage collection and namespace deletion with a real
kube-controller-manager, as in a cluster: what a NodeDrain's VMMigrations become when the
drain is deleted, and a namespace holding our objects (each with the operator's finalizer)
that finishes deleting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import (
    API_VERSION,
    FINALIZER,
    GROUP,
    NODEDRAINS,
    PROXMOXCLUSTERS,
    VERSION,
    VMMIGRATIONS,
    VMPLACEMENTS,
)
from proxmigrate.controllers.children import DRAIN_HISTORY_LABEL, DRAIN_LABEL
from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import create, get, items, vmmigration
from tests.e2e.test_operator_drains import connect, node, nodedrain, start_sim, vm, wait_phase
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace, wait_for

NAMESPACE = "e2e-gc"  # the operator's; deleted by the last test
PLAIN_NAMESPACE = "e2e-gc-plain"  # watched by no operator: no finalizers
# After the sentinel is gone, how long the other dependents may take (concurrent workers).
GC_SETTLE_SECONDS = 5


@dataclass
class Scene:
    api: client.ApiClient
    sim: PvesimProcess
    operator: OperatorProcess


@pytest.fixture(scope="module")
def scene(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """pvesim and the operator watching NAMESPACE, where a ProxmoxCluster `lab` is Ready."""
    tmp_path = tmp_path_factory.mktemp("gc")
    api = control_plane.api_client()
    ensure_namespace(api, NAMESPACE)
    config = {
        "nodes": [node("pve1", 64), node("pve2", 64), node("pve3", 64)],
        "vms": [vm(100, "pve1", 2), vm(101, "pve1", 2), vm(200, "pve2", 1)],
    }
    with (
        start_sim(tmp_path, config) as sim,
        OperatorProcess(
            control_plane.kubeconfig, tmp_path / "operator.log", namespace=NAMESPACE
        ) as operator,
    ):
        connect(api, NAMESPACE, sim, operator)
        yield Scene(api, sim, operator)


def owned_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [
        {"apiVersion": API_VERSION, "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}
    ]


def sentinel(api: client.ApiClient, namespace: str, owner: dict[str, Any]) -> str:
    """A ConfigMap owned by `owner`: once the garbage collector has deleted it, it has
    handled the owner's deletion (its dependents are processed together)."""
    name = f"sentinel-{owner['metadata']['name']}"
    body = {"metadata": {"name": name, "ownerReferences": owned_by(owner)}}
    client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
    return name


def gone(read: Any) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def children(
    api: client.ApiClient, drain: str, label: str = DRAIN_LABEL
) -> dict[str, dict[str, Any]]:
    """The VMMigrations whose `label` is `drain`'s name, by name."""
    return {
        m["metadata"]["name"]: m
        for m in items(api, NAMESPACE, VMMIGRATIONS)
        if m["metadata"].get("labels", {}).get(label) == drain
    }


def delete(api: client.ApiClient, namespace: str, plural: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )


def test_the_garbage_collector_deletes_what_a_deleted_drain_owns(
    control_plane: ControlPlane,
) -> None:
    """Our kinds as owners and dependents: kube-controller-manager really collects them."""
    api = control_plane.api_client()
    ensure_namespace(api, PLAIN_NAMESPACE)
    custom = client.CustomObjectsApi(api)
    drain = custom.create_namespaced_custom_object(
        GROUP, VERSION, PLAIN_NAMESPACE, NODEDRAINS, nodedrain("owner", "pve1")
    )
    child = vmmigration("owner-100", 100, "pve2")
    child["metadata"]["ownerReferences"] = owned_by(drain)
    create(api, PLAIN_NAMESPACE, VMMIGRATIONS, child)
    config_map = sentinel(api, PLAIN_NAMESPACE, drain)

    delete(api, PLAIN_NAMESPACE, NODEDRAINS, "owner")

    wait_for(
        lambda: (
            gone(lambda: get(api, PLAIN_NAMESPACE, VMMIGRATIONS, "owner-100"))
            and gone(
                lambda: client.CoreV1Api(api).read_namespaced_config_map(
                    config_map, PLAIN_NAMESPACE
                )
            )
        ),
        timeout=30,
        message="the garbage collector to delete the drain's VMMigration and ConfigMap",
    )


def test_finished_migrations_outlive_their_deleted_drain(scene: Scene) -> None:
    """Deleting a NodeDrain lifts the cordon; the record of what moved stays: its finished
    VMMigrations, labelled `proxmigrate.dev/drain-history=<drain>` and owned by nobody."""
    api = scene.api
    create(api, NAMESPACE, NODEDRAINS, nodedrain("pve1", "pve1"))
    status = wait_phase(api, NAMESPACE, "pve1", {"Drained", "Failed"}, scene.operator)
    assert status["phase"] == "Drained", status.get("conditions")
    drain = get(api, NAMESPACE, NODEDRAINS, "pve1")
    config_map = sentinel(api, NAMESPACE, drain)
    moved = set(children(api, "pve1"))
    assert len(moved) == 2

    delete(api, NAMESPACE, NODEDRAINS, "pve1")
    wait_for(
        lambda: (
            gone(lambda: get(api, NAMESPACE, NODEDRAINS, "pve1"))
            and gone(
                lambda: client.CoreV1Api(api).read_namespaced_config_map(config_map, NAMESPACE)
            )
        ),
        timeout=30,
        message=f"the drain and its sentinel gone\n{scene.operator.tail()}",
    )

    with contextlib.suppress(TimeoutError):  # the collector's workers run concurrently
        wait_for(lambda: not children(api, "pve1", DRAIN_HISTORY_LABEL), timeout=GC_SETTLE_SECONDS)
    kept = children(api, "pve1", DRAIN_HISTORY_LABEL)
    assert set(kept) == moved
    assert {m["status"]["phase"] for m in kept.values()} == {"Succeeded"}
    assert all(not m["metadata"].get("ownerReferences") for m in kept.values())
    # A NodeDrain re-created with the same name neither sees nor adopts them.
    assert not children(api, "pve1")


def test_a_namespace_with_our_objects_finishes_deleting(scene: Scene) -> None:
    """Every kind carries the operator's finalizer; the namespace controller deletes them,
    the operator releases each, and the namespace goes."""
    api = scene.api
    create(api, NAMESPACE, NODEDRAINS, nodedrain("pve2", "pve2", dryRun=True))
    placement = {
        "apiVersion": API_VERSION,
        "kind": "VMPlacement",
        "metadata": {"name": "vm200"},
        "spec": {"clusterRef": {"name": "lab"}, "vmid": 200, "node": "pve2", "policy": "report"},
    }
    create(api, NAMESPACE, VMPLACEMENTS, placement)
    create(api, NAMESPACE, VMMIGRATIONS, vmmigration("vm200-pve3", 200, "pve3"))
    kinds = (PROXMOXCLUSTERS, NODEDRAINS, VMPLACEMENTS, VMMIGRATIONS)
    wait_for(
        lambda: all(
            FINALIZER in obj["metadata"].get("finalizers", [])
            for plural in kinds
            for obj in items(api, NAMESPACE, plural)
        ),
        timeout=30,
        message=f"the operator's finalizer on every object\n{scene.operator.tail()}",
    )

    client.CoreV1Api(api).delete_namespace(NAMESPACE)

    wait_for(
        lambda: gone(lambda: client.CoreV1Api(api).read_namespace(NAMESPACE)),
        timeout=60,
        message=f"namespace {NAMESPACE} deleted\n{scene.operator.tail()}",
    )
