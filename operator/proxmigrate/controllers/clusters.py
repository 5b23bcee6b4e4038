"""ProxmoxCluster: connect, keep the inventory fresh, own the migration engine.

A kopf daemon per ProxmoxCluster builds its `ClusterRuntime`, runs the engine loop, and
re-syncs the inventory every `spec.inventory.syncIntervalSeconds`, writing what it finds
(version, nodes, VM count, conditions) to status.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from proxmigrate import metrics
from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.conditions import set_condition
from proxmigrate.api.constants import GROUP, PROXMOXCLUSTERS, VERSION
from proxmigrate.api.enums import AuthMethod
from proxmigrate.api.fields import SpecError
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.controllers.registry import RUNTIMES
from proxmigrate.kube import Kube, shared_kube
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveTLSError
from proxmigrate.pve.transport import Auth, PasswordAuth, TokenAuth
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)
RETRY_CONFIG_SECONDS = 10.0  # how soon a cluster with bad configuration is looked at again


class ConfigurationError(Exception):
    """The cluster cannot be reached as configured; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def post_event(ref: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(dict(ref), type=kind, reason=reason, message=message)


async def _credentials(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> Auth:
    ref = spec.credentials_secret_ref
    secret_ns = ref.namespace_or(namespace)
    try:
        data = await kube.read_secret(secret_ns, ref.name)
    except ApiException as error:
        if error.status == 404:
            raise ConfigurationError(
                "SecretNotFound", f"credentials Secret {secret_ns}/{ref.name} does not exist"
            ) from None
        raise ConfigurationError(
            "SecretUnreadable", f"cannot read Secret {secret_ns}/{ref.name}: {error.reason}"
        ) from None
    if data.get("tokenId") and data.get("tokenSecret"):
        try:
            return TokenAuth(data["tokenId"], data["tokenSecret"])
        except ValueError as error:
            raise ConfigurationError("InvalidCredentials", str(error)) from None
    if data.get("username") and data.get("password"):
        return PasswordAuth(data["username"], data["password"])
    raise ConfigurationError(
        "InvalidCredentials",
        f"Secret {secret_ns}/{ref.name} needs tokenId + tokenSecret (API token) "
        "or username + password (ticket)",
    )


async def _ca_bundle(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> str | None:
    """A file with the CA bundle requests should trust, or None for the system store."""
    pem = spec.tls.ca_bundle
    if spec.tls.ca_secret_ref is not None:
        ref = spec.tls.ca_secret_ref
        try:
            data = await kube.read_secret(ref.namespace_or(namespace), ref.name)
        except ApiException as error:
            raise ConfigurationError(
                "SecretNotFound", f"CA Secret {ref.name}: {error.reason}"
            ) from None
        pem = data.get(spec.tls.ca_secret_key)
        if not pem:
            raise ConfigurationError(
                "InvalidCredentials", f"CA Secret {ref.name} has no key {spec.tls.ca_secret_key}"
            )
    if not pem:
        return None
    path = (
        Path(tempfile.gettempdir())
        / f"proxmigrate-ca-{hashlib.sha256(pem.encode()).hexdigest()}.pem"
    )
    if not path.exists():
        path.write_text(pem)
    return str(path)


@dataclass(frozen=True)
class Connection:
    """Everything that decides how the PVE API is reached; a change means a new client."""

    endpoints: tuple[str, ...]
    auth: Auth
    verify_tls: bool
    ca_bundle: str | None

    def client(self, cluster: str) -> AsyncPveClient:
        return AsyncPveClient(
            PveClient(
                list(self.endpoints),
                self.auth,
                cluster=cluster,
                verify_tls=self.verify_tls,
                ca_bundle=self.ca_bundle,
            )
        )

    @property
    def auth_method(self) -> AuthMethod:
        return AuthMethod.TICKET if isinstance(self.auth, PasswordAuth) else AuthMethod.TOKEN


async def read_connection(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> Connection:
    """Endpoints, TLS and the credentials as they are now (Secrets are re-read each time)."""
    return Connection(
        endpoints=tuple(str(endpoint) for endpoint in spec.endpoints),
        auth=await _credentials(kube, spec, namespace),
        verify_tls=not spec.tls.insecure_skip_verify,
        ca_bundle=await _ca_bundle(kube, spec, namespace),
    )


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
        events=post_event,
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
        conditions = set_condition(
            self.conditions, "Ready", ready, reason, message, generation, now
        )
        conditions = set_condition(
            conditions, "Degraded", degraded[0], degraded[1], degraded[2], generation, now
        )
        self.conditions = conditions
        label = f"{self.namespace}/{self.name}"
        metrics.CLUSTER_READY.remove_by_labels({"proxmox_cluster": label})  # the old reason
        metrics.CLUSTER_READY.labels(label, reason).set(1 if ready else 0)
        status = {"conditions": conditions, "observedGeneration": generation, **(extra or {})}
        await self.kube.patch_status(PROXMOXCLUSTERS, self.namespace, self.name, status)


async def sync(runtime: ClusterRuntime, writer: _StatusWriter, generation: int | None) -> None:
    """Read version, datacenter options and inventory; report them and any refusal."""
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
    refusal = runtime.transport_refusal()
    if refusal is not None:
        await writer.write(generation, False, refusal[0], refusal[1], extra, degraded)
        return
    message = (
        f"connected: PVE {extra['pveVersion']}, {extra['nodesOnline']} nodes online, "
        f"{extra['vmCount']} VMs, {extra['clusterMigrationType']} migrations"
    )
    await writer.write(generation, True, "Connected", message, extra, degraded)


@kopf.daemon(GROUP, VERSION, PROXMOXCLUSTERS, cancellation_timeout=10.0, backoff=5.0)
async def proxmox_cluster(
    name: str, namespace: str, spec: Any, meta: Any, status: Any, **_: Any
) -> None:
    """Lives as long as the ProxmoxCluster on the active replica: kopf stops it when the
    object goes or peering pauses this replica, and then its series go too."""
    try:
        await _manage(name, namespace, spec, meta, status)
    finally:
        metrics.forget(proxmox_cluster=f"{namespace}/{name}")


async def _manage(name: str, namespace: str, spec: Any, meta: Any, status: Any) -> None:
    """Connect, then sync and run the engine."""
    kube = shared_kube()
    writer = _StatusWriter(kube, namespace, name, status)
    while True:
        generation = meta.get("generation")
        try:
            parsed = ProxmoxClusterSpec.from_spec(dict(spec))
            connection = await read_connection(kube, parsed, namespace)
            runtime = build_runtime(kube, parsed, connection, namespace, name)
            break
        except SpecError as error:
            await writer.write(generation, False, "InvalidSpec", str(error))
        except ConfigurationError as error:
            await writer.write(generation, False, error.reason, str(error))
        await asyncio.sleep(RETRY_CONFIG_SECONDS)
    RUNTIMES[(namespace, name)] = runtime
    engine_loop = asyncio.create_task(runtime.run())
    try:
        while True:
            generation = meta.get("generation")
            try:
                parsed = ProxmoxClusterSpec.from_spec(dict(spec))
                runtime.update_policy(parsed.migration_policy)
                latest = await read_connection(kube, parsed, namespace)
                if latest != connection:
                    log.info(
                        "cluster %s/%s: endpoints, TLS or credentials changed", namespace, name
                    )
                    await runtime.replace_client(latest.client(runtime.label), latest.auth_method)
                    connection = latest
                await sync(runtime, writer, generation)
            except SpecError as error:
                await writer.write(generation, False, "InvalidSpec", str(error))
            except ConfigurationError as error:
                await writer.write(generation, False, error.reason, str(error))
            except PveError as error:
                log.warning("cluster %s/%s: %s", namespace, name, error)
                await writer.write(generation, False, _reason_for(error), str(error))
            interval = parsed.inventory.sync_interval_seconds
            await asyncio.sleep(interval)
    finally:
        RUNTIMES.pop((namespace, name), None)
        engine_loop.cancel()
        await runtime.close()
