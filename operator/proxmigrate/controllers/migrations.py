"""VMMigration: hand new and resumed migrations to their cluster's runtime; cancel on delete."""

from __future__ import annotations

from typing import Any

import kopf

from proxmigrate.api.constants import GROUP, VERSION, VMMIGRATIONS
from proxmigrate.api.enums import FINAL_MIGRATION_PHASES, MigrationPhase
from proxmigrate.api.events import EventReason
from proxmigrate.api.fields import SpecError
from proxmigrate.api.migration import VMMigrationSpec
from proxmigrate.controllers import events
from proxmigrate.controllers.children import is_deleting
from proxmigrate.controllers.registry import registry_of
from proxmigrate.kube import Kube
from proxmigrate.pve.errors import PveError
from proxmigrate.runtime.cluster import ClusterRuntime, MigrationRequest

WAIT_FOR_CLUSTER_SECONDS = 3.0


def request_from(body: Any) -> tuple[str, MigrationRequest]:
    """The ProxmoxCluster's name and what the VMMigration asks for."""
    spec, meta = VMMigrationSpec.from_spec(body["spec"]), body["metadata"]
    request = MigrationRequest(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        vmid=spec.vmid,
        target=spec.target,
        source=spec.source,
        online=spec.online,
        with_local_disks=spec.with_local_disks,
        bandwidth_limit_kib=spec.bandwidth_limit_kib,
        priority=spec.priority,
        generation=int(meta.get("generation") or 1),
    )
    return spec.cluster_name, request


async def adopt_migrations(kube: Kube, runtime: ClusterRuntime) -> int:
    """Hand the runtime every non-final VMMigration of its cluster it does not know, as
    kopf's resume handler does after a process restart: a runtime rebuilt for any other
    reason (its daemon restarted, this replica took over) would otherwise never see the ones
    the runtime it replaces had accepted, nor one whose creation event a watch lost while
    the API server was away. Returns how many it took."""
    adopted = 0
    for body in await kube.list(VMMIGRATIONS, runtime.namespace):
        status = body.get("status") or {}
        if status.get("phase") in FINAL_MIGRATION_PHASES or is_deleting(body):
            continue
        try:
            cluster, request = request_from(body)
        except SpecError:
            continue  # its create handler reports it
        if cluster == runtime.name and await runtime.accept(request, dict(status)):
            adopted += 1
    return adopted


@kopf.on.resume(GROUP, VERSION, VMMIGRATIONS)
@kopf.on.create(GROUP, VERSION, VMMIGRATIONS)
async def accept_migration(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Queue a new VMMigration, or resume one that was running before a restart."""
    if status.get("phase") in FINAL_MIGRATION_PHASES:
        return
    cluster, request = request_from(body)
    runtime = registry_of(memo).runtime_for(request.namespace, cluster)
    if runtime is None:
        if status.get("phase") is None:
            patch.status["phase"] = MigrationPhase.PENDING.value
            patch.status["message"] = f"waiting for ProxmoxCluster {cluster} to connect"
        raise kopf.TemporaryError(
            f"ProxmoxCluster {cluster} is not connected yet", delay=WAIT_FOR_CLUSTER_SECONDS
        )
    try:
        await runtime.accept(request, dict(status))
    except PveError as error:
        raise kopf.TemporaryError(f"PVE API: {error}", delay=WAIT_FOR_CLUSTER_SECONDS) from error


@kopf.on.delete(GROUP, VERSION, VMMIGRATIONS)
async def cancel_migration(
    body: kopf.Body, status: kopf.Status, logger: kopf.Logger, memo: Any, **_: Any
) -> None:
    """Deleting a queued VMMigration drops it; deleting a running one stops its PVE task,
    also when its ProxmoxCluster is deleted with it (controllers/cluster_deletion.py)."""
    if status.get("phase") in FINAL_MIGRATION_PHASES:
        return
    cluster, request = request_from(body)
    registry = registry_of(memo)
    runtime = registry.runtime_for(request.namespace, cluster)
    if runtime is None:
        if status.get("upid"):  # its cluster is gone (or not connected): say what goes on
            message = (
                f"deleted while ProxmoxCluster {cluster} is not connected: PVE task "
                f"{status['upid']} was not stopped; check VM {request.vmid} on its nodes"
            )
            logger.warning(message)
            events.post(request.event_ref, "Warning", EventReason.MIGRATION_CANCELLED, message)
        return
    with registry.cancels_of(request.namespace, cluster).cancelling():  # its cluster waits
        logger.info(await runtime.cancel(request))
