"""ProxmoxCluster: connect, keep the inventory fresh, own the migration engine.

A kopf daemon per ProxmoxCluster builds its `ClusterRuntime`, runs the engine loop, and
re-syncs the inventory every `spec.inventory.syncIntervalSeconds`, writing what it finds
(version, nodes, VM count, conditions) to status.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from proxmigrate import metrics
from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.conditions import set_condition
from proxmigrate.api.constants import GROUP, PROXMOXCLUSTERS, VERSION
from proxmigrate.api.events import EventReason
from proxmigrate.api.fields import SpecError
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.controllers import events
from proxmigrate.controllers.cache import namespaced
from proxmigrate.controllers.cluster_deletion import (
    CANCELS_MAX_SECONDS,
    after_this_task,
    let_cancels_finish,
    report_left_running,
)
from proxmigrate.controllers.connection import ConfigurationError, Connection, read_connection
from proxmigrate.controllers.migrations import adopt_migrations
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.controllers.reconcile import STOP_GRACE_SECONDS
from proxmigrate.controllers.registry import Registry, Stoppable, first_of, registry_of
from proxmigrate.controllers.wakeups import DRAINS_AND_PLACEMENTS, inventory_synced
from proxmigrate.kube import Kube, shared_kube
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveTLSError
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)
RETRY_CONFIG_SECONDS = 10.0  # how soon a cluster with bad configuration is looked at again
# An engine loop that has not completed a tick for this long is stalled: Ready False, and
# `/healthz` fails so that Kubernetes restarts the process. Ticks come every poll (2 s) and
# every Kubernetes and PVE call has a timeout, so only a hang gets here.
ENGINE_STALL_SECONDS = 60.0
ENGINE_FAILING_TICKS = 3  # this many failed ticks in a row make the cluster not Ready


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


def _reason_for(error: PveError) -> str:
    if isinstance(error, PveAuthError):
        return "AuthenticationFailed"
    if isinstance(error, PveTLSError):
        return "TLSError"
    if isinstance(error, PveApiError):
        return "ApiError"
    return "Unreachable"


class _StatusWriter:
    """Keeps the last written conditions so transitions keep their times."""

    def __init__(self, kube: Kube, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.conditions: list[dict[str, Any]] = list(status.get("conditions") or [])

    async def write(
        self,
        generation: int | None,
        ready: bool | None,
        reason: str,
        message: str,
        extra: Mapping[str, Any] | None = None,
        degraded: tuple[bool, str, str] = (False, "AsExpected", "all nodes online"),
    ) -> None:
        now = datetime.datetime.now(datetime.UTC)
        before = next((c for c in self.conditions if c.get("type") == "Ready"), {})
        conditions = set_condition(
            self.conditions, "Ready", ready, reason, message, generation, now
        )
        after = next(c for c in conditions if c.get("type") == "Ready")
        conditions = set_condition(
            conditions, "Degraded", degraded[0], degraded[1], degraded[2], generation, now
        )
        self.conditions = conditions
        label = f"{self.namespace}/{self.name}"
        metrics.CLUSTER_READY.remove_by_labels({"proxmox_cluster": label})  # the old reason
        metrics.CLUSTER_READY.labels(label, reason).set(1 if ready else 0)
        status = {"conditions": conditions, "observedGeneration": generation, **(extra or {})}
        await self.kube.patch_status(PROXMOXCLUSTERS, self.namespace, self.name, status)
        if (before.get("status"), before.get("reason")) != (after["status"], reason):
            kind, event = (
                ("Normal", EventReason.CLUSTER_READY)
                if ready
                else ("Warning", EventReason.CLUSTER_NOT_READY)
            )
            events.post(cluster_ref(self.namespace, self.name), kind, event, f"{reason}: {message}")


def cluster_ref(namespace: str, name: str) -> dict[str, Any]:
    """What an Event about a ProxmoxCluster names."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProxmoxCluster",
        "metadata": {"namespace": namespace, "name": name},
    }


async def sync(
    runtime: ClusterRuntime,
    writer: _StatusWriter,
    generation: int | None,
    trouble: tuple[str, str] | None = None,
) -> None:
    """Read version, datacenter options and inventory; report them and any refusal, or the
    engine's `trouble` (a reason and message)."""
    version = await runtime.client.version()
    await runtime.refresh_settings()
    inventory = await runtime.refresh_inventory()
    offline = sorted(node.name for node in inventory.nodes if not node.online)
    extra = {
        "pveVersion": str(version.get("version", "")),
        "nodes": [{"name": n.name, "online": n.online} for n in inventory.nodes],
        "nodeCount": len(inventory.nodes),
        "nodesOnline": f"{len(inventory.nodes) - len(offline)}/{len(inventory.nodes)}",
        "activeEndpoint": str(runtime.client.client.transport.active_endpoint),
        "vmCount": len(inventory.vms),
        "lastSyncTime": to_rfc3339(datetime.datetime.now(datetime.UTC)),
        "authMethod": runtime.auth.value,
        "clusterMigrationType": runtime.settings.type if runtime.settings else "unknown",
    }
    degraded = (
        (True, "NodesOffline", f"offline: {', '.join(offline)}")
        if offline
        else (False, "AsExpected", "all nodes online")
    )
    refusal = runtime.transport_refusal() or trouble
    if refusal is not None:
        await writer.write(generation, False, refusal[0], refusal[1], extra, degraded)
        return
    message = (
        f"connected: PVE {extra['pveVersion']}, {extra['nodesOnline']} nodes online, "
        f"{extra['vmCount']} VMs, {extra['clusterMigrationType']} migrations"
    )
    await writer.write(generation, True, "Connected", message, extra, degraded)


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
    writer = _StatusWriter(kube, namespace, name, status)
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
            trouble = _engine_trouble(runtime, engine_loop)
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
                not_ready = (_reason_for(error), str(error))
            except Exception as error:  # the API server, or a bug: log it, keep the runtime
                log.exception("cluster %s/%s: sync failed", namespace, name)
                not_ready = ("SyncFailed", f"{type(error).__name__}: {error}")
            if not_ready is not None:
                await _report(writer, generation, *not_ready)
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
            after_this_task(functools.partial(_say_deleted, writer, meta.get("generation"), said))


async def _say_deleted(writer: _StatusWriter, generation: int | None, message: str) -> None:
    """The deleted cluster's last status, written once its daemon has ended: its watch event
    has kopf see that and let the object go (kopf looks again by itself only after the
    daemon's `cancellation_backoff`, 35 s)."""
    now = datetime.datetime.now(datetime.UTC)
    conditions = set_condition(
        writer.conditions, "Ready", False, "Deleted", message, generation, now
    )
    try:
        await writer.kube.patch_status(
            PROXMOXCLUSTERS, writer.namespace, writer.name, {"conditions": conditions}
        )
    except Exception as error:
        log.warning(
            "cluster %s/%s: %s (not written: %s)", writer.namespace, writer.name, message, error
        )


async def _connect(
    kube: Kube,
    writer: _StatusWriter,
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
            await _report(writer, generation, "InvalidSpec", str(error))
        except ConfigurationError as error:
            await _report(writer, generation, error.reason, str(error))
        except Exception as error:
            log.exception("cluster %s/%s: connecting failed", namespace, name)
            await _report(writer, generation, "SyncFailed", f"{type(error).__name__}: {error}")
        await first_of([stopped.wait()], RETRY_CONFIG_SECONDS)
    return None


async def _report(writer: _StatusWriter, generation: int | None, reason: str, text: str) -> None:
    """Ready False with why; an API server that refuses this too is only logged."""
    try:
        await writer.write(generation, False, reason, text)
    except Exception as error:
        log.warning(
            "cluster %s/%s: cannot report %s: %s", writer.namespace, writer.name, reason, error
        )


def _warn_if_unverified(connection: Connection, runtime: ClusterRuntime) -> None:
    if not connection.verify_tls:
        message = (
            "TLS verification is off (spec.tls.insecureSkipVerify): the credentials go to "
            "whoever answers at the endpoints"
        )
        log.warning("cluster %s: %s", runtime.label, message)
        ref = cluster_ref(runtime.namespace, runtime.name)
        events.post(ref, "Warning", EventReason.TLS_VERIFICATION_OFF, message)


def _engine_trouble(runtime: ClusterRuntime, loop: asyncio.Task[None]) -> tuple[str, str] | None:
    """Why the engine does not work now (a Ready reason and message), or None."""
    if loop.done():
        error = None if loop.cancelled() else loop.exception()
        log.error("cluster %s: the engine loop stopped (%r); restarting it", runtime.label, error)
        return "EngineStopped", f"the migration engine stopped ({error!r}); restarted"
    silent = time.monotonic() - runtime.heartbeat
    if silent > ENGINE_STALL_SECONDS:
        return "EngineStalled", f"no engine tick completed for {silent:.0f} s"
    if runtime.failed_ticks >= ENGINE_FAILING_TICKS:
        return "EngineFailing", f"{runtime.failed_ticks} ticks failed: {runtime.loop_error}"
    return None


@kopf.on.probe(id="engines")
def engines_alive(memo: Any, **_: Any) -> dict[str, float]:
    """`/healthz`: fails (HTTP 500) while any engine loop has not completed a tick for
    ENGINE_STALL_SECONDS (hung on a call, or stopped); else seconds since each one's tick."""
    now = time.monotonic()
    runtimes = list(registry_of(memo).runtimes.values())
    silent = {rt.label: round(now - rt.heartbeat, 1) for rt in runtimes}
    stalled = {label: age for label, age in silent.items() if age > ENGINE_STALL_SECONDS}
    if stalled:
        raise kopf.PermanentError(f"engine loops stalled (seconds without a tick): {stalled}")
    return silent
