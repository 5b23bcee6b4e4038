"""Every Prometheus metric the operator exports, in one place.

Names follow Prometheus conventions: the `proxmigrate_` prefix, base units in the
name, `_total` on counters, and only small bounded label sets (never a VM id).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MIGRATIONS = Counter(
    "proxmigrate_migrations",
    "Migrations finished, by cluster, target node and result (succeeded|failed).",
    ["cluster", "target", "result"],
    registry=REGISTRY,
)
MIGRATION_DURATION = Histogram(
    "proxmigrate_migration_duration_seconds",
    "Wall time of a migration from its POST to its task's end.",
    ["cluster", "result"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
MIGRATION_QUEUE_WAIT = Histogram(
    "proxmigrate_migration_queue_wait_seconds",
    "Time a migration waited in the engine's queue before it was started.",
    ["cluster"],
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
SSH_DROPS = Counter(
    "proxmigrate_ssh_drops",
    "Migrations failed because the target's sshd dropped a connection during key exchange.",
    ["cluster", "target"],
    registry=REGISTRY,
)
MIGRATION_RETRIES = Counter(
    "proxmigrate_migration_retries",
    "Migrations retried after a transient failure, by classified reason.",
    ["cluster", "reason"],
    registry=REGISTRY,
)
MIGRATIONS_IN_FLIGHT = Gauge(
    "proxmigrate_migrations_in_flight",
    "Migrations currently running, by target node.",
    ["cluster", "target"],
    registry=REGISTRY,
)
MIGRATIONS_QUEUED = Gauge(
    "proxmigrate_migrations_queued",
    "Migrations waiting in the engine's queue.",
    ["cluster"],
    registry=REGISTRY,
)
TARGET_CONCURRENCY_LIMIT = Gauge(
    "proxmigrate_target_concurrency_limit",
    "Current adaptive (AIMD) limit of concurrent migrations into a target node.",
    ["cluster", "target"],
    registry=REGISTRY,
)
PVE_API_REQUESTS = Counter(
    "proxmigrate_pve_api_requests",
    "Requests sent to the Proxmox VE API, by HTTP method and status code (0: no response).",
    ["cluster", "method", "code"],
    registry=REGISTRY,
)
DRAIN_PROGRESS = Gauge(
    "proxmigrate_drain_progress_ratio",
    "Share of a NodeDrain's VMs that have left the node (0 to 1).",
    ["cluster", "node"],
    registry=REGISTRY,
)
DRAIN_REMAINING = Gauge(
    "proxmigrate_drain_remaining_vms",
    "VMs still to be moved off a draining node.",
    ["cluster", "node"],
    registry=REGISTRY,
)
PLACEMENTS_OUT_OF_SYNC = Gauge(
    "proxmigrate_placements_out_of_sync",
    "VMPlacement objects whose VMs are not on their desired node.",
    ["cluster"],
    registry=REGISTRY,
)
INVENTORY_SYNC_DURATION = Histogram(
    "proxmigrate_inventory_sync_duration_seconds",
    "Time to read a cluster's inventory from the PVE API.",
    ["cluster"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "proxmigrate_build_info",
    "Always 1; the operator's version as a label.",
    ["version"],
    registry=REGISTRY,
)
