"""ProxmoxCluster: connect, keep the inventory fresh, own the migration engine.

A kopf daemon per ProxmoxCluster builds its `ClusterRuntime`, runs the engine loop, and
re-syncs the inventory every `spec.inventory.syncIntervalSeconds`, writing what it finds
(version, nodes, VM count, conditions) to status (controllers/cluster_status.py) and
restarting an engine loop that ended (controllers/engine_health.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import kopf

from proxmigrate import metrics
from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.constants import GROUP, PROXMOXCLUSTERS, VERSION
from proxmigrate.api.events import EventReason
from proxmigrate.api.fields import SpecError
from proxmigrate.controllers import events
from proxmigrate.controllers.cache import namespaced
from proxmigrate.controllers.cluster_deletion import (
    CANCELS_MAX_SECONDS,
    after_this_task,
    let_cancels_finish,
    report_left_running,
)
from proxmigrate.controllers.cluster_status import ClusterStatus, cluster_ref, reason_for, sync
from proxmigrate.controllers.connection import ConfigurationError, Connection, read_connection
from proxmigrate.controllers.engine_health import engine_trouble
from proxmigrate.controllers.migrations import adopt_migrations
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.controllers.reconcile import STOP_GRACE_SECONDS
from proxmigrate.controllers.registry import Registry, Stoppable, first_of, registry_of
from proxmigrate.controllers.wakeups import DRAINS_AND_PLACEMENTS, inventory_synced
from proxmigrate.kube import Kube, shared_kube
from proxmigrate.pve.errors import PveError
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)
RETRY_CONFIG_SECONDS = 10.0  # how soon a cluster with bad configuration is looked at again


def build_runtime(
    kube: Kube, spec: ProxmoxClusterSpec, connection: Connection, namespace: str, name: str
) -> ClusterRuntime:
    return ClusterRuntime(
        namespace=namespace,
        name=name,
        client=connection.client(f"{namespace}/{name}"),
        policy=spec.migration_policy,
        auth=connection.auth_method,
        kube=kube,
        events=events.post,
        task_poll_seconds=OPTIONS.task_poll_seconds,
    )


@kopf.daemon(
    GROUP,
    VERSION,
    PROXMOXCLUSTERS,
    cancellation_backoff=STOP_GRACE_SECONDS + CANCELS_MAX_SECONDS,
    cancellation_timeout=10.0,
    backoff=5.0,
)
async def proxmox_cluster(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Lives as long as the ProxmoxCluster on the active replica: kopf stops it when the
    object goes or peering pauses this replica (a sync under way finishes, then it ends
    within STOP_GRACE_SECONDS rather than being cancelled, deleted after the cancellations
    of the VMMigrations deleted with it: controllers/cluster_deletion.py), and then its
    series go too."""

    def deleted() -> bool:
        reason = stopped.reason
        return reason is not None and bool(reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)

    registry = registry_of(memo)
    try:
        await _manage(name, namespaced(namespace), spec, meta, status, registry, stopped, deleted)
    finally:
        metrics.forget(proxmox_cluster=f"{namespace}/{name}")


async def _manage(
    name: str,
    namespace: str,
    spec: Any,
    meta: Any,
    status: Any,
    registry: Registry,
    stopped: Stoppable,
    deleted: Callable[[], bool],
) -> None:
    """Connect, adopt the cluster's VMMigrations, then sync and supervise the engine until
    kopf stops the daemon. No error ends this loop (an API server that fails now may answer
    in a second): its runtime, with every migration it follows, lives as long as the daemon,
    and, the cluster `deleted()`, as long as the VMMigrations deleted with it are cancelled."""
    kube = shared_kube()
    writer = ClusterStatus(kube, namespace, name, status)
    connected = await _connect(kube, writer, name, namespace, spec, meta, stopped)
    if connected is None:
        return
    runtime, connection = connected
    registry.runtimes[(namespace, name)] = runtime
    registry.wake_cluster(namespace, name, DRAINS_AND_PLACEMENTS)
    engine_loop = asyncio.create_task(runtime.run())
    try:
        while not stopped:
            generation = meta.get("generation")
            interval: float = RETRY_CONFIG_SECONDS
            trouble = engine_trouble(runtime, engine_loop)
            if engine_loop.done():
                engine_loop = asyncio.create_task(runtime.run())
            try:
                parsed = ProxmoxClusterSpec.from_spec(dict(spec))
                interval = parsed.inventory.sync_interval_seconds
                runtime.update_policy(parsed.migration_policy)
                latest = await read_connection(kube, parsed, namespace)
                if latest != connection:
                    log.info(
                        "cluster %s/%s: endpoints, TLS or credentials changed", namespace, name
                    )
                    await runtime.replace_client(latest.client(runtime.label), latest.auth_method)
                    connection = latest
                    _warn_if_unverified(connection, runtime)
                adopted = await adopt_migrations(kube, runtime)  # every sync: a watch may miss
                if adopted:
                    log.info("cluster %s: adopted %d VMMigrations", runtime.label, adopted)
                await sync(runtime, writer, generation, trouble)
                if runtime.inventory is not None:
                    inventory_synced(registry, namespace, name, runtime.inventory)
                not_ready = None
            except SpecError as error:
                not_ready = ("InvalidSpec", str(error))
            except ConfigurationError as error:
                not_ready = (error.reason, str(error))
            except PveError as error:
                log.warning("cluster %s/%s: %s", namespace, name, error)
                not_ready = (reason_for(error), str(error))
            except Exception as error:  # the API server, or a bug: log it, keep the runtime
                log.exception("cluster %s/%s: sync failed", namespace, name)
                not_ready = ("SyncFailed", f"{type(error).__name__}: {error}")
            if not_ready is not None:
                await writer.report(generation, *not_ready)
            await first_of([stopped.wait()], interval)
    finally:
        engine_loop.cancel()  # nothing starts any more
        said = None
        try:
            if deleted() and runtime.attempts.running:
                cancels = registry.cancels_of(namespace, name)
                left = await let_cancels_finish(lambda: runtime.attempts.running, cancels)
                ref = cluster_ref(namespace, name)
                said = report_left_running(left, runtime.label, ref, events.post)
        finally:
            registry.runtimes.pop((namespace, name), None)
            registry.inventories.pop((namespace, name), None)
            registry.cancels.pop((namespace, name), None)
            await runtime.close()
        if said is not None:
            after_this_task(functools.partial(writer.say_deleted, meta.get("generation"), said))


async def _connect(
    kube: Kube,
    writer: ClusterStatus,
    name: str,
    namespace: str,
    spec: Any,
    meta: Any,
    stopped: Stoppable,
) -> tuple[ClusterRuntime, Connection] | None:
    """The runtime, once the spec and its Secrets allow one (every refusal is reported);
    None when kopf stops the daemon first."""
    while not stopped:
        generation = meta.get("generation")
        try:
            parsed = ProxmoxClusterSpec.from_spec(dict(spec))
            connection = await read_connection(kube, parsed, namespace)
            runtime = build_runtime(kube, parsed, connection, namespace, name)
            _warn_if_unverified(connection, runtime)
            return runtime, connection
        except SpecError as error:
            await writer.report(generation, "InvalidSpec", str(error))
        except ConfigurationError as error:
            await writer.report(generation, error.reason, str(error))
        except Exception as error:
            log.exception("cluster %s/%s: connecting failed", namespace, name)
            await writer.report(generation, "SyncFailed", f"{type(error).__name__}: {error}")
        await first_of([stopped.wait()], RETRY_CONFIG_SECONDS)
    return None


def _warn_if_unverified(connection: Connection, runtime: ClusterRuntime) -> None:
    if not connection.verify_tls:
        message = (
            "TLS verification is off (spec.tls.insecureSkipVerify): the credentials go to "
            "whoever answers at the endpoints"
        )
        log.warning("cluster %s: %s", runtime.label, message)
        ref = cluster_ref(runtime.namespace, runtime.name)
        events.post(ref, "Warning", EventReason.TLS_VERIFICATION_OFF, message)
