"""VMMigrations created by drains and placements: their manifests, labels and phases.

Drains and placements never call the migrate API; they create VMMigration objects (owned
by them, labelled with their name) and read the phase those objects reach.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Set
from typing import Any

from proxmigrate.api.constants import API_VERSION, FINALIZER, VM_MIGRATION
from proxmigrate.api.enums import MigrationPhase
from proxmigrate.api.migration import migration_phase
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)
DRAIN_LABEL = "proxmigrate.dev/drain"
# A deleted NodeDrain's VMMigrations that ran (or still run) keep this label instead of
# DRAIN_LABEL and lose their owner: the record of the maintenance outlives the drain, and a
# drain re-created with the same name neither adopts nor counts them (docs/api.md).
DRAIN_HISTORY_LABEL = "proxmigrate.dev/drain-history"
PLACEMENT_LABEL = "proxmigrate.dev/placement"
LABEL_VALUE_MAX = 63  # Kubernetes label values
NAME_MAX = 253  # object names (DNS subdomain)


def label_value(name: str) -> str:
    """`name` as a label value: names over 63 characters keep a prefix and a hash suffix."""
    if len(name) <= LABEL_VALUE_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: LABEL_VALUE_MAX - 9].rstrip('-.')}-{digest}"


def child_name(owner_name: str, suffix: str) -> str:
    """`<owner>-<suffix>`, the owner part shortened so the result is a valid object name."""
    room = NAME_MAX - len(suffix) - 1
    return f"{owner_name[:room].rstrip('-.')}-{suffix}"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller reference to `owner` (a NodeDrain or VMPlacement body).

    Without blockOwnerDeletion: setting it needs `update` on the owner's finalizers under
    the OwnerReferencesPermissionEnforcement admission plugin, and nothing here relies on it.
    """
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def migration_manifest(
    *,
    owner: Mapping[str, Any],
    label_key: str,
    cluster: str,
    vmid: int,
    target: str,
    source: str | None,
    online: bool,
    with_local_disks: bool,
    name: str,
    priority: int = 0,
) -> dict[str, Any]:
    """A VMMigration owned by `owner` and labelled `label_key=<owner name>`, created with
    kopf's finalizer: kopf would add it on the first watch event and run the create handler
    (admission) only on the next, a round trip later (0.01-0.07 s of each reaction)."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {label_key: label_value(owner["metadata"]["name"])},
        "ownerReferences": [owner_reference(owner)],
        "finalizers": [FINALIZER],
    }
    spec: dict[str, Any] = {
        "clusterRef": {"name": cluster},
        "vmid": vmid,
        "target": target,
        "online": online,
        "withLocalDisks": with_local_disks,
        "priority": priority,
    }
    if source is not None:
        spec["source"] = source
    return {
        "apiVersion": API_VERSION,
        "kind": VM_MIGRATION.kind,
        "metadata": metadata,
        "spec": spec,
    }


def waiting_onto(children: Iterable[Mapping[str, Any]], nodes: Set[str]) -> list[Mapping[str, Any]]:
    """The VMMigrations among `children` not started yet whose target is one of `nodes`."""
    waiting = (MigrationPhase.PENDING, MigrationPhase.QUEUED)
    return [
        child
        for child in children
        if child["spec"]["target"] in nodes and migration_phase(child) in waiting
    ]


def withdraw_onto(
    children: Iterable[Mapping[str, Any]], nodes: Set[str], runtime: ClusterRuntime
) -> list[Mapping[str, Any]]:
    """Those of `children` queued onto `nodes` (cordoned since their owner made them) that
    the cluster's runtime took back before they started; the owner deletes them once its
    status no longer counts on them."""
    namespace = runtime.namespace
    withdrawn = [
        child
        for child in waiting_onto(children, nodes)
        if runtime.withdraw(f"{namespace}/{child['metadata']['name']}")
    ]
    if withdrawn:
        log.info(
            "withdrawn before they started, their target being drained now: %s",
            ", ".join(f"{namespace}/{child['metadata']['name']}" for child in withdrawn),
        )
    return withdrawn


def child_vmid(child: Mapping[str, Any]) -> int:
    return int(child["spec"]["vmid"])


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))
