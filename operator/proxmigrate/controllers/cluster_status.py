"""What a ProxmoxCluster's status says: its conditions, what a PVE sync found, and why not.

Kept apart from the daemon (controllers/clusters.py) that decides when to write: one
`ClusterStatus` per daemon remembers the conditions it wrote, so that a transition keeps its
time, the Ready series keeps one reason, and an Event marks each change of Ready.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from proxmigrate import metrics
from proxmigrate.api.conditions import set_condition
from proxmigrate.api.constants import GROUP, PROXMOXCLUSTERS, VERSION
from proxmigrate.api.events import EventReason
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.controllers import events
from proxmigrate.kube import Kube
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveTLSError
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)


def cluster_ref(namespace: str, name: str) -> dict[str, Any]:
    """What an Event about a ProxmoxCluster names."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProxmoxCluster",
        "metadata": {"namespace": namespace, "name": name},
    }


def reason_for(error: PveError) -> str:
    """The Ready reason of a PVE error."""
    if isinstance(error, PveAuthError):
        return "AuthenticationFailed"
    if isinstance(error, PveTLSError):
        return "TLSError"
    if isinstance(error, PveApiError):
        return "ApiError"
    return "Unreachable"


class ClusterStatus:
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

    async def report(self, generation: int | None, reason: str, text: str) -> None:
        """Ready False with why; an API server that refuses this too is only logged."""
        try:
            await self.write(generation, False, reason, text)
        except Exception as error:
            log.warning(
                "cluster %s/%s: cannot report %s: %s", self.namespace, self.name, reason, error
            )

    async def say_deleted(self, generation: int | None, message: str) -> None:
        """The deleted cluster's last status, written once its daemon has ended: its watch
        event has kopf see that and let the object go (kopf looks again by itself only after
        the daemon's `cancellation_backoff`, 35 s)."""
        now = datetime.datetime.now(datetime.UTC)
        conditions = set_condition(
            self.conditions, "Ready", False, "Deleted", message, generation, now
        )
        try:
            await self.kube.patch_status(
                PROXMOXCLUSTERS, self.namespace, self.name, {"conditions": conditions}
            )
        except Exception as error:
            log.warning(
                "cluster %s/%s: %s (not written: %s)", self.namespace, self.name, message, error
            )


async def sync(
    runtime: ClusterRuntime,
    writer: ClusterStatus,
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
