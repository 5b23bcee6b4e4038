"""Deleting a NodeDrain: its queued migrations are cancelled, running and finished ones
stay as the record of the maintenance, the cordon goes (with the object); its metric series
go when its daemon ends (controllers/drain_series.py). Also what names those series."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from proxmigrate.api.constants import GROUP, NODEDRAINS, VERSION, VMMIGRATIONS
from proxmigrate.api.enums import DrainPhase, MigrationPhase
from proxmigrate.api.migration import migration_phase
from proxmigrate.api.refs import raw_cluster_name
from proxmigrate.controllers.cache import namespaced
from proxmigrate.controllers.children import DRAIN_HISTORY_LABEL, DRAIN_LABEL, label_value
from proxmigrate.kube import shared_kube


@kopf.on.delete(GROUP, VERSION, NODEDRAINS)
async def release_drain(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Cancel queued migrations, keep the others as the drain's record, lift the cordon.

    Running and finished VMMigrations lose their owner (the garbage collector would delete
    them with the drain) and trade DRAIN_LABEL for DRAIN_HISTORY_LABEL; running ones finish.
    Its VMMigrations are listed, not read from the cache: one created a moment ago and not
    delivered by the watch yet must be cancelled too."""
    kube, namespace = shared_kube(), namespaced(namespace)
    cancelled = detached = kept = 0
    selector = f"{DRAIN_LABEL}={label_value(name)}"
    as_record = {
        "metadata": {
            "ownerReferences": None,
            "labels": {DRAIN_LABEL: None, DRAIN_HISTORY_LABEL: label_value(name)},
        }
    }
    for child in await kube.list(VMMIGRATIONS, namespace, label_selector=selector):
        phase = migration_phase(child)
        child_name_ = child["metadata"]["name"]
        if phase.is_final or phase is MigrationPhase.RUNNING:
            await kube.patch(VMMIGRATIONS, namespace, child_name_, as_record)
            if phase.is_final:
                kept += 1
            else:
                detached += 1
        else:
            await kube.delete(VMMIGRATIONS, namespace, child_name_)
            cancelled += 1
    if status.get("phase") not in (DrainPhase.DRAINED, DrainPhase.FAILED, DrainPhase.RETURNED):
        await kube.patch_status(NODEDRAINS, namespace, name, {"phase": DrainPhase.CANCELLED.value})
    logger.info(
        f"NodeDrain deleted: {cancelled} queued migrations cancelled, "
        f"{detached} running ones left to finish, {kept} finished ones kept as its record"
    )


def metric_labels(namespace: str, spec: Any) -> tuple[str, str]:
    """(proxmox_cluster, pve_node) of a NodeDrain, read from its raw spec (valid or not)."""
    node = spec.get("nodeName", "") if isinstance(spec, Mapping) else ""
    return f"{namespace}/{raw_cluster_name(spec) or ''}", str(node)
