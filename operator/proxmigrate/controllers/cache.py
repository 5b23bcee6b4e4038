"""The objects reconcilers read about others, from kopf indexes fed by its watches.

A reconciler never lists or gets what a watch already delivers: NodeDrains and VMPlacements
by namespace, ProxmoxClusters by name, VMMigrations by the drain or placement that owns
them. kopf fills every index before any handler runs, so a first pass sees the cordons and
pins of everything that exists.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from proxmigrate.api.constants import (
    GROUP,
    NODEDRAINS,
    PROXMOXCLUSTERS,
    VERSION,
    VMMIGRATIONS,
    VMPLACEMENTS,
)
from proxmigrate.controllers.children import DRAIN_LABEL, PLACEMENT_LABEL, label_value

Body = dict[str, Any]
OwnerKey = tuple[str, str, str]  # (namespace, label key, label value of the owner's name)
CHILD_STATUS = ("phase", "message", "reason")  # what owners read of a VMMigration's status


def snapshot(body: Mapping[str, Any], status_keys: tuple[str, ...] | None = None) -> Body:
    """A copy of what the controllers read (of the status, only `status_keys` if given):
    the watch's body changes under a live view, and a cache of every object is held in
    memory."""
    status = dict(body.get("status") or {})
    if status_keys is not None:
        status = {key: status[key] for key in status_keys if key in status}
    meta = body.get("metadata") or {}
    kept = (
        "name",
        "namespace",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    )
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            **{key: meta[key] for key in kept if key in meta},
            "labels": dict(meta.get("labels") or {}),
            # proxmigrate's own annotations (a NodeMaintenance's done-signal), not kubectl's
            "annotations": {
                key: value
                for key, value in (meta.get("annotations") or {}).items()
                if key.startswith(f"{GROUP}/")
            },
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(status),
    }


def namespaced(namespace: str | None) -> str:
    """kopf types every handler's namespace as optional; all our kinds are namespaced."""
    if namespace is None:
        raise kopf.PermanentError("a cluster-scoped object where a namespaced one was expected")
    return namespace


@kopf.index(GROUP, VERSION, NODEDRAINS)
def drains_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Body]:
    return {namespaced(namespace): snapshot(body)}


@kopf.index(GROUP, VERSION, VMPLACEMENTS)
def placements_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Body]:
    """Drains read placements' pins: their spec."""
    return {namespaced(namespace): snapshot(body, status_keys=())}


@kopf.index(GROUP, VERSION, PROXMOXCLUSTERS)
def clusters_index(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], Body]:
    return {(namespaced(namespace), name): {"metadata": {"name": name}, "spec": dict(spec)}}


@kopf.index(GROUP, VERSION, VMMIGRATIONS)
def children_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[OwnerKey, Body] | None:
    """VMMigrations by the label of the NodeDrain or VMPlacement that made them."""
    owners = [key for key in (DRAIN_LABEL, PLACEMENT_LABEL) if key in labels]
    child = snapshot(body, status_keys=CHILD_STATUS)
    return {(namespaced(namespace), key, labels[key]): child for key in owners} or None


@dataclass(frozen=True)
class Caches:
    """The indexes as one handle; each method answers plain dicts (copies)."""

    drains_index: kopf.Index[str, Body]
    placements_index: kopf.Index[str, Body]
    clusters_index: kopf.Index[tuple[str, str], Body]
    children_index: kopf.Index[OwnerKey, Body]

    @classmethod
    def of(cls, handler_kwargs: Mapping[str, Any]) -> Caches:
        """From a handler's keyword arguments (kopf passes each index under its id)."""
        return cls(
            handler_kwargs["drains_index"],
            handler_kwargs["placements_index"],
            handler_kwargs["clusters_index"],
            handler_kwargs["children_index"],
        )

    def drains(self, namespace: str) -> list[Body]:
        return list(self.drains_index.get(namespace, []))

    def placements(self, namespace: str) -> list[Body]:
        return list(self.placements_index.get(namespace, []))

    def cluster(self, namespace: str, name: str) -> Body | None:
        return next(iter(self.clusters_index.get((namespace, name), [])), None)

    def children(self, namespace: str, label_key: str, owner_name: str) -> list[Body]:
        return list(self.children_index.get((namespace, label_key, label_value(owner_name)), []))
