"""Every Prometheus metric the operator exports, in one place.

Names follow Prometheus conventions: the `proxmigrate_` prefix, base units in the
name, `_total` on counters, and only small bounded label sets (never a VM id). Label
names avoid the ones Prometheus setups attach themselves (`cluster` as an external
label, `node` from ServiceMonitors): `proxmox_cluster` is the ProxmoxCluster
("namespace/name"), `pve_node` a Proxmox node. docs/metrics.md is generated from this
module (hack/gen-metrics-doc.py).
"""

from collections.abc import Callable, Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (CPU, memory, open files) and python_* (GC, version), as the default registry has
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

MIGRATIONS = Counter(
    "proxmigrate_migrations",
    "Migrations finished, by target node and result (succeeded|failed|cancelled).",
    ["proxmox_cluster", "target", "result"],
    registry=REGISTRY,
)
MIGRATION_DURATION = Histogram(
    "proxmigrate_migration_duration_seconds",
    "Wall time of a migration from its POST to its task's end.",
    ["proxmox_cluster", "result"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
MIGRATION_QUEUE_WAIT = Histogram(
    "proxmigrate_migration_queue_wait_seconds",
    "Time a migration waited in the engine's queue before it was started.",
    ["proxmox_cluster"],
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
SSH_DROPS = Counter(
    "proxmigrate_ssh_drops",
    "Migrations failed because the target's sshd dropped a connection during key exchange.",
    ["proxmox_cluster", "target"],
    registry=REGISTRY,
)
MIGRATION_RETRIES = Counter(
    "proxmigrate_migration_retries",
    "Migrations retried after a transient failure, by classified reason.",
    ["proxmox_cluster", "reason"],
    registry=REGISTRY,
)
MIGRATIONS_IN_FLIGHT = Gauge(
    "proxmigrate_migrations_in_flight",
    "Migrations running now, by target node (0 once a target is idle).",
    ["proxmox_cluster", "target"],
    registry=REGISTRY,
)
MIGRATIONS_QUEUED = Gauge(
    "proxmigrate_migrations_queued",
    "Migrations waiting in the engine's queue (including those waiting to retry).",
    ["proxmox_cluster"],
    registry=REGISTRY,
)
TARGET_CONCURRENCY_LIMIT = Gauge(
    "proxmigrate_target_concurrency_limit",
    "Current adaptive (AIMD) limit of concurrent migrations into a target node.",
    ["proxmox_cluster", "target"],
    registry=REGISTRY,
)
PVE_API_REQUESTS = Counter(
    "proxmigrate_pve_api_requests",
    "Requests sent to the Proxmox VE API, by HTTP method and status code (0: no response).",
    ["proxmox_cluster", "method", "code"],
    registry=REGISTRY,
)
CLUSTER_READY = Gauge(
    "proxmigrate_cluster_ready",
    "1 when a ProxmoxCluster is Ready, else 0; `reason` is its Ready condition's reason "
    "(Connected, Unreachable, AuthenticationFailed, TLSError, ...). One series per "
    "ProxmoxCluster, exported only by the replica that manages it.",
    ["proxmox_cluster", "reason"],
    registry=REGISTRY,
)
DRAIN_PROGRESS = Gauge(
    "proxmigrate_drain_progress_ratio",
    "Share of a NodeDrain's (namespace/name) VMs that have left the node (0 to 1); while "
    "it returns its guests home (returnGuests), the share of the return that ended. From "
    "the drain's first move (or its return) until the NodeDrain is deleted.",
    ["proxmox_cluster", "pve_node", "nodedrain"],
    registry=REGISTRY,
)
DRAIN_REMAINING = Gauge(
    "proxmigrate_drain_remaining_vms",
    "VMs of a NodeDrain still to be moved off the node; while it returns its guests home, "
    "those still to come back. Exists while proxmigrate_drain_progress_ratio does.",
    ["proxmox_cluster", "pve_node", "nodedrain"],
    registry=REGISTRY,
)
DRAIN_BLOCKED = Gauge(
    "proxmigrate_drain_blocked",
    "1 while a NodeDrain (namespace/name) is Blocked, with the condition's reason "
    "(InsufficientCapacity, InvalidNode, InvalidSpec, DuplicateDrain); no series otherwise. "
    "Dry runs never count.",
    ["proxmox_cluster", "pve_node", "nodedrain", "reason"],
    registry=REGISTRY,
)
PLACEMENTS_OUT_OF_SYNC = Gauge(
    "proxmigrate_placements_out_of_sync",
    "VMPlacement objects whose VMs are not on their desired node.",
    ["proxmox_cluster"],
    registry=REGISTRY,
)
INVENTORY_SYNC_DURATION = Histogram(
    "proxmigrate_inventory_sync_duration_seconds",
    "Time to read a cluster's inventory from the PVE API (successful reads only).",
    ["proxmox_cluster"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "proxmigrate_build_info",
    "Always 1; the operator's version as a label.",
    ["version"],
    registry=REGISTRY,
)

RESULTS = ("succeeded", "failed", "cancelled")
# The methods the PVE adapter sends (pve/client.py) and the refusals the auth alert
# (ProxmigratePVEAPIAuthErrors) counts with increase().
PVE_METHODS = ("GET", "POST", "PUT", "DELETE")
PVE_REFUSALS = ("401", "403")


def count_from_zero(proxmox_cluster: str, target: str) -> None:
    """Create a target's counters at 0: Prometheus' increase() and rate() see no increase
    in the first sample of a series, so a first SSH drop or failure counted into a series
    that did not exist before would never show."""
    SSH_DROPS.labels(proxmox_cluster, target)
    for result in RESULTS:
        MIGRATIONS.labels(proxmox_cluster, target, result)


def count_cluster_from_zero(proxmox_cluster: str, retry_reasons: Iterable[str]) -> None:
    """Create a cluster's counters and histograms empty, for the reason `count_from_zero`
    gives: the first retry of a kind, the first migration's duration and wait, the first
    inventory read, the first refused request would not show in increase(), rate() or a
    quantile otherwise."""
    for reason in retry_reasons:
        MIGRATION_RETRIES.labels(proxmox_cluster, reason)
    for result in ("succeeded", "failed"):  # a cancelled migration's duration is not kept
        MIGRATION_DURATION.labels(proxmox_cluster, result)
    MIGRATION_QUEUE_WAIT.labels(proxmox_cluster)
    INVENTORY_SYNC_DURATION.labels(proxmox_cluster)
    for method in PVE_METHODS:
        for code in PVE_REFUSALS:
            PVE_API_REQUESTS.labels(proxmox_cluster, method, code)


LABELLED: tuple[MetricWrapperBase, ...] = tuple(
    value
    for value in tuple(globals().values())
    if isinstance(value, MetricWrapperBase) and value._labelnames
)


def forget(**labels: str) -> None:
    """Remove every series whose labels include `labels` (e.g. `proxmox_cluster=...`), in
    every metric that has those labels: what a deleted object or a paused replica no longer
    reports must not linger next to the series the active replica exports."""
    for metric in LABELLED:
        if set(labels) <= set(metric._labelnames):
            metric.remove_by_labels(labels)


def pve_answer_counter(proxmox_cluster: str) -> Callable[[str, int], None]:
    """What the PVE adapter calls for each answer (method, status): counts it for a cluster."""

    def count(method: str, code: int) -> None:
        PVE_API_REQUESTS.labels(proxmox_cluster, method, str(code)).inc()

    return count
