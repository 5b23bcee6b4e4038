"""Who is woken when something changes: the event-driven half of the reconcilers.

kopf has updated its indexes (controllers/cache.py) by the time these handlers run, so a
woken reconciler reads what woke it. Each wakes only those whose inputs changed:

- a NodeDrain or VMPlacement: itself when its spec changes or it is being deleted (its own
  status writes do not wake it);
- a NodeDrain's cordon (node, dry run, existence): every drain of its cluster, and the
  placements that may use that node; its phase or its guests' moves and returns (what
  other drains read of it: who owns a node, the load on their targets): the other drains
  of its cluster;
- a VMMigration: the drain or placement that made it;
- a ProxmoxCluster's spec: its runtime gets the new migration policy at once, and its
  drains and placements re-plan with the new settings;
- its inventory (clusters.py, after each PVE sync that changed something): its drains and
  placements;
- a NodeMaintenance: itself when its spec, its done annotation or its deletion changes;
  and when one of its NodeDrains changes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import kopf

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.constants import (
    GROUP,
    NODEDRAINS,
    NODEMAINTENANCES,
    PROXMOXCLUSTERS,
    VERSION,
    VMMIGRATIONS,
    VMPLACEMENTS,
)
from proxmigrate.api.fields import SpecError
from proxmigrate.api.maintenance import MAINTENANCE_LABEL, done_nodes
from proxmigrate.api.refs import raw_cluster_name
from proxmigrate.controllers.cache import Caches, namespaced
from proxmigrate.controllers.children import DRAIN_LABEL, PLACEMENT_LABEL, label_value
from proxmigrate.controllers.context import cordoned_nodes
from proxmigrate.controllers.registry import Fingerprint, Registry, registry_of
from proxmigrate.inventory import Inventory

log = logging.getLogger(__name__)
HANDLERS = (
    "drain_changed",
    "placement_changed",
    "child_changed",
    "cluster_changed",
    "maintenance_changed",
    "maintenance_drain_changed",
)


class QuietWakeups(logging.Filter):
    """Drops kopf's "Handler ... succeeded." for these handlers: they run on every watch
    event and only set wakers, so their success says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.endswith("succeeded.") and any(f"'{name}'" in message for name in HANDLERS)
        )


DRAINS_AND_PLACEMENTS = frozenset({NODEDRAINS, VMPLACEMENTS})


def _wake_owner(registry: Registry, plural: str, namespace: str, name: str, spec: Any) -> None:
    """Wake the object's own reconciler when what it was asked changed (not its status)."""
    waker = registry.wakers.get((plural, namespace, label_value(name)))
    if waker is None:
        return
    waker.cluster = raw_cluster_name(spec) or waker.cluster
    waker.wake()


@kopf.on.event(GROUP, VERSION, NODEDRAINS)
def drain_changed(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    registry, namespace = registry_of(memo), namespaced(namespace)
    spec = body.get("spec") or {}
    if type != "DELETED" and (NODEDRAINS, namespace, label_value(name)) not in registry.marks:
        registry.drain_seen[namespace] = time.monotonic()  # its first event: a new drain
    if _changed_own(registry, type, NODEDRAINS, namespace, name, body):
        _wake_owner(registry, NODEDRAINS, namespace, name, spec)
    cluster = raw_cluster_name(spec)
    if cluster is None:
        return
    caches = Caches.of(kwargs)
    cordoned = cordoned_nodes(caches.drains(namespace), cluster)
    before = registry.cordons.get((namespace, cluster))
    if before != cordoned:
        registry.cordons[(namespace, cluster)] = cordoned
        changed = None if before is None else before ^ cordoned
        registry.wake_cluster(namespace, cluster, frozenset({NODEDRAINS}))
        registry.wake_cluster(namespace, cluster, frozenset({VMPLACEMENTS}), nodes=changed)
        return
    key = (NODEDRAINS, namespace, label_value(name))
    waker = registry.wakers.get(key)
    seen = _read_by_other_drains(body)
    if waker is not None and waker.seen != seen:
        waker.seen = seen
        registry.wake_cluster(namespace, cluster, frozenset({NODEDRAINS}), but=key)


def _read_by_other_drains(body: Any) -> object:
    """What the other drains of its cluster read of a NodeDrain (controllers/
    drain_requests.py): its phase (it owns its node until Returned, `owning_drain`) and
    where each of its guests is going (moves and returns under way load their nodes)."""
    status = body.get("status") or {}
    moves = tuple(
        (e.get("vmid"), e.get("from"), e.get("to"), e.get("phase"), e.get("returnPhase"))
        for e in status.get("vms") or []
    )
    return status.get("phase"), moves


def _changed_own(
    registry: Registry, type: str, plural: str, namespace: str, name: str, body: Any
) -> bool:
    """Whether the event changed the spec (generation) or started the deletion: a status
    write alone does not count."""
    key = (plural, namespace, label_value(name))
    if type == "DELETED":
        registry.marks.pop(key, None)
        return False
    meta = body.get("metadata") or {}
    mark = (meta.get("generation"), bool(meta.get("deletionTimestamp")))
    if registry.marks.get(key) == mark:
        return False
    registry.marks[key] = mark
    return True


@kopf.on.event(GROUP, VERSION, VMPLACEMENTS)
def placement_changed(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    registry, namespace = registry_of(memo), namespaced(namespace)
    if _changed_own(registry, type, VMPLACEMENTS, namespace, name, body):
        _wake_owner(registry, VMPLACEMENTS, namespace, name, body.get("spec") or {})


@kopf.on.event(GROUP, VERSION, VMMIGRATIONS)
def child_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    registry, namespace = registry_of(memo), namespaced(namespace)
    for label, plural in ((DRAIN_LABEL, NODEDRAINS), (PLACEMENT_LABEL, VMPLACEMENTS)):
        owner = labels.get(label)
        if owner:
            registry.wake((plural, namespace, owner))


@kopf.on.event(GROUP, VERSION, PROXMOXCLUSTERS)
def cluster_changed(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    """A new spec takes effect now: the migration policy in the engine, the placement
    settings in the next pass of every drain and placement."""
    registry, namespace = registry_of(memo), namespaced(namespace)
    generation = (body.get("metadata") or {}).get("generation")
    if type == "DELETED" or registry.cluster_generations.get((namespace, name)) == generation:
        return
    registry.cluster_generations[(namespace, name)] = generation
    runtime = registry.runtime_for(namespace, name)
    if runtime is not None:
        with contextlib.suppress(SpecError):  # the cluster's daemon reports it
            spec = ProxmoxClusterSpec.from_spec(dict(body.get("spec") or {}))
            runtime.update_policy(spec.migration_policy)
    registry.wake_cluster(namespace, name, DRAINS_AND_PLACEMENTS)


def _fingerprint(inventory: Inventory) -> Fingerprint:
    nodes = frozenset((node.name, node.online) for node in inventory.nodes)
    vms = {
        vm.vmid: (
            vm.node,
            vm.name,
            vm.running,
            vm.template,
            vm.tags,
            vm.pool,
            vm.ha_state,
            vm.lock,
            vm.max_memory,
        )
        for vm in inventory.vms
    }
    return nodes, vms


def inventory_synced(
    registry: Registry, namespace: str, cluster: str, inventory: Inventory
) -> None:
    """After a PVE sync: wake the cluster's drains, and the placements that read a guest
    whose facts changed (all of them when a node went on- or offline). Memory and CPU
    usage, which change at every sync, wake nobody: a plan reads them when it is made."""
    nodes, vms = _fingerprint(inventory)
    before = registry.inventories.get((namespace, cluster))
    registry.inventories[(namespace, cluster)] = (nodes, vms)
    if before is not None and before == (nodes, vms):
        return
    changed: frozenset[int] | None = None
    if before is not None and before[0] == nodes:
        changed = frozenset(
            vmid for vmid in vms.keys() | before[1].keys() if vms.get(vmid) != before[1].get(vmid)
        )
    registry.wake_cluster(namespace, cluster, frozenset({NODEDRAINS}))
    registry.wake_cluster(namespace, cluster, frozenset({VMPLACEMENTS}), changed)


@kopf.on.event(GROUP, VERSION, NODEMAINTENANCES)
def maintenance_changed(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    """Wake the maintenance when its spec, its done annotation or its deletion changed."""
    registry, namespace = registry_of(memo), namespaced(namespace)
    key = (NODEMAINTENANCES, namespace, label_value(name))
    if type == "DELETED":
        registry.marks.pop(key, None)
        return
    meta = body.get("metadata") or {}
    mark = (
        meta.get("generation"),
        bool(meta.get("deletionTimestamp")),
        done_nodes(meta.get("annotations")),
    )
    if registry.marks.get(key) != mark:
        registry.marks[key] = mark
        registry.wake(key)


@kopf.on.event(GROUP, VERSION, NODEDRAINS)
def maintenance_drain_changed(
    namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    """A NodeDrain of a maintenance changed: wake the maintenance."""
    owner = labels.get(MAINTENANCE_LABEL)
    if owner:
        registry_of(memo).wake((NODEMAINTENANCES, namespaced(namespace), owner))
