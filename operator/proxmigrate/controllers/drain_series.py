"""A NodeDrain's metric series, true at every moment.

They are derived from the status each pass leaves on the object, so the first pass after
an operator restart (or on the replica that takes over) re-creates them from the stored
status, even while the cluster is unreachable; and they go when the drain's daemon ends
(the drain deleted, or peering paused this replica), after its last pass. Each carries the
drain's name (`nodedrain`): a Returned drain and the next drain of its node never share a
series or remove each other's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxmigrate import metrics
from proxmigrate.api.enums import DrainPhase
from proxmigrate.controllers.drain_release import metric_labels
from proxmigrate.status.drain_return import status_return_counts


def figures(status: Mapping[str, Any]) -> tuple[float, int] | None:
    """(progress, remaining) of the gauges: the drain's own once it started moving, its
    return's (`return_counts`) once it sends its guests home; None before it moves (planning,
    Blocked, dry runs), when there is nothing true to say."""
    counts = status_return_counts(status)
    if counts is not None:
        return counts.progress, counts.remaining
    if not status.get("startTime"):
        return None
    return float(status.get("progress") or 0.0), int(status.get("remaining") or 0)


def export(namespace: str, name: str, spec: Any, status: Mapping[str, Any]) -> None:
    """Set the drain's series from its whole `status` (what the object holds once written)."""
    cluster, node = metric_labels(namespace, spec)
    drain = f"{namespace}/{name}"
    metrics.DRAIN_BLOCKED.remove_by_labels({"nodedrain": drain})
    dry_run = bool(spec.get("dryRun")) if isinstance(spec, Mapping) else False
    if status.get("phase") == DrainPhase.BLOCKED and not dry_run:
        reason = next(
            (
                str(c.get("reason", ""))
                for c in status.get("conditions") or []
                if c.get("type") == "Ready"
            ),
            "",
        )
        metrics.DRAIN_BLOCKED.labels(cluster, node, drain, reason).set(1)
    shown = figures(status)
    if shown is None:
        metrics.DRAIN_PROGRESS.remove_by_labels({"nodedrain": drain})
        metrics.DRAIN_REMAINING.remove_by_labels({"nodedrain": drain})
    else:
        metrics.DRAIN_PROGRESS.labels(cluster, node, drain).set(shown[0])
        metrics.DRAIN_REMAINING.labels(cluster, node, drain).set(shown[1])


def forget(namespace: str, name: str) -> None:
    """Remove every series of the drain: its daemon ended."""
    metrics.forget(nodedrain=f"{namespace}/{name}")
