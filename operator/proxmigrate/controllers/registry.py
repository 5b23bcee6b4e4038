"""The live ClusterRuntime of every ProxmoxCluster this replica manages, by namespace/name."""

from __future__ import annotations

from proxmigrate.runtime.cluster import ClusterRuntime

RUNTIMES: dict[tuple[str, str], ClusterRuntime] = {}


def runtime_for(namespace: str, cluster: str) -> ClusterRuntime | None:
    return RUNTIMES.get((namespace, cluster))
