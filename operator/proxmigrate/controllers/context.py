"""What drains and placements need to know about their cluster before they act.

The connected runtime (PVE client, engine, inventory), the cluster's planner settings, the
nodes cordoned by NodeDrains, and the nodes VMPlacements pin guests to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.fields import SpecError
from proxmigrate.api.placement import VMPlacementSpec
from proxmigrate.api.refs import raw_cluster_name
from proxmigrate.controllers.cache import Caches
from proxmigrate.controllers.children import is_deleting
from proxmigrate.controllers.registry import Registry
from proxmigrate.inventory import Inventory
from proxmigrate.runtime.cluster import ClusterRuntime

INVENTORY_MAX_AGE = 2.0  # seconds; drains and placements re-read the inventory at most this often


class ClusterNotReady(Exception):
    """The cluster cannot be used yet; `reason` is a condition reason, the text its message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClusterContext:
    runtime: ClusterRuntime
    spec: ProxmoxClusterSpec
    inventory: Inventory

    @property
    def label(self) -> str:
        return self.runtime.label


async def cluster_context(
    caches: Caches, registry: Registry, namespace: str, cluster: str
) -> ClusterContext:
    """The connected cluster with a fresh inventory; ClusterNotReady says why not."""
    body = caches.cluster(namespace, cluster)
    if body is None:
        raise ClusterNotReady(
            "ClusterNotFound", f"ProxmoxCluster {cluster} does not exist in namespace {namespace}"
        )
    try:
        spec = ProxmoxClusterSpec.from_spec(body.get("spec"))
    except SpecError as error:
        raise ClusterNotReady("ClusterInvalid", f"ProxmoxCluster {cluster}: {error}") from None
    runtime = registry.runtime_for(namespace, cluster)
    if runtime is None:
        raise ClusterNotReady(
            "ClusterNotConnected", f"waiting for ProxmoxCluster {cluster} to connect"
        )
    inventory = await runtime.refresh_inventory(max_age=INVENTORY_MAX_AGE)
    return ClusterContext(runtime, spec, inventory)


def drains_of_cluster(drains: Iterable[Mapping[str, Any]], cluster: str) -> list[Mapping[str, Any]]:
    """NodeDrains of `cluster` that cordon their node: not dry runs, not being deleted."""
    return [
        drain
        for drain in drains
        if raw_cluster_name(drain.get("spec")) == cluster
        and not (drain.get("spec") or {}).get("dryRun")
        and not is_deleting(drain)
    ]


def cordoned_nodes(drains: Iterable[Mapping[str, Any]], cluster: str) -> frozenset[str]:
    """The nodes of the cluster's NodeDrains, but those whose maintenance is declared done
    (`maintenanceDone`: their guests are returning; the node is a target again)."""
    return frozenset(
        str(drain["spec"]["nodeName"])
        for drain in drains_of_cluster(drains, cluster)
        if not drain["spec"].get("maintenanceDone")
    )


def unusable_targets(cordoned: frozenset[str], inventory: Inventory) -> frozenset[str]:
    """Nodes a move not started yet must not go to: cordoned by a NodeDrain, or offline now
    (PVE would refuse each attempt until the guest's retries are spent)."""
    return cordoned | {node.name for node in inventory.nodes if not node.online}


def placement_pins(
    placements: Iterable[Mapping[str, Any]], inventory: Inventory, cluster: str
) -> dict[int, tuple[str, ...]]:
    """vmid -> the nodes its VMPlacement allows, for the drain planner.

    Placements that are invalid or match nothing pin nothing (they report that themselves);
    when two placements name one guest, the first by name wins.
    """
    pins: dict[int, tuple[str, ...]] = {}
    for placement in sorted(placements, key=lambda body: body["metadata"]["name"]):
        if is_deleting(placement):
            continue
        try:
            spec = VMPlacementSpec.from_spec(placement.get("spec"))
        except SpecError:
            continue
        if spec.cluster_name != cluster:
            continue
        for vmid in _matched_vmids(spec, inventory):
            pins.setdefault(vmid, spec.nodes)
    return pins


def _matched_vmids(spec: VMPlacementSpec, inventory: Inventory) -> list[int]:
    if spec.vmid is not None:
        return [spec.vmid]
    if spec.name is not None:
        named = [vm.vmid for vm in inventory.vms if vm.name == spec.name]
        return named if len(named) == 1 else []
    assert spec.selector is not None
    return [vm.vmid for vm in inventory.vms if spec.selector.matches(vm)]
