"""Kubernetes Events for the lifecycle of drains, placements and clusters.

Events are posted on transitions only (a phase or condition that changed), never on a
pass that changed nothing. Every reason, the VMMigrations' own ones the runtime posts
included, is in `api.events.Reason`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf

from proxmigrate.api.enums import DrainPhase, MaintenanceNodePhase, MaintenancePhase
from proxmigrate.api.events import EventReason
from proxmigrate.status.maintenance import NodeEntry, Verdict

_DRAIN_REASONS = {
    DrainPhase.DRAINING: ("Normal", EventReason.DRAIN_STARTED),
    DrainPhase.BLOCKED: ("Warning", EventReason.DRAIN_BLOCKED),
    DrainPhase.DRAINED: ("Normal", EventReason.DRAIN_FINISHED),
    DrainPhase.FAILED: ("Warning", EventReason.DRAIN_FAILED),
    DrainPhase.RETURNED: ("Normal", EventReason.GUESTS_RETURNED),
}


def post(ref: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Queue an Event about `ref` (kopf posts it in the background)."""
    kopf.event(cast(kopf.Body, dict(ref)), type=kind, reason=reason, message=message)


def drain_transition(
    body: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """An Event when a drain's phase changed to one worth telling (not for dry runs)."""
    if (body.get("spec") or {}).get("dryRun") or before.get("phase") == after.get("phase"):
        return
    try:
        kind, reason = _DRAIN_REASONS[DrainPhase(str(after.get("phase")))]
    except (KeyError, ValueError):
        return
    conditions = after.get("conditions") or []
    ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    post(body, kind, reason, str(ready.get("message") or after.get("phase")))


def placement_transition(
    body: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any], created: int
) -> None:
    """DriftDetected when VMMigrations were created to correct drift, DriftCorrected when
    the placement is in sync again after it was not."""
    if created:
        post(body, "Normal", EventReason.DRIFT_DETECTED, f"{created} VMMigrations created")
    if after.get("inSync") is True and before.get("inSync") is False:
        post(body, "Normal", EventReason.DRIFT_CORRECTED, "every selected guest is on its node")


_MAINTENANCE_REASONS = {
    MaintenancePhase.SUCCEEDED: ("Normal", EventReason.MAINTENANCE_SUCCEEDED),
    MaintenancePhase.FAILED: ("Warning", EventReason.MAINTENANCE_FAILED),
    MaintenancePhase.BLOCKED: ("Warning", EventReason.MAINTENANCE_BLOCKED),
}
_NODE_REASONS = {
    MaintenanceNodePhase.IN_MAINTENANCE: ("Normal", EventReason.NODE_IN_MAINTENANCE),
    MaintenanceNodePhase.RETURNING: ("Normal", EventReason.MAINTENANCE_DONE),
    MaintenanceNodePhase.DONE: ("Normal", EventReason.NODE_DONE),
    MaintenanceNodePhase.FAILED: ("Warning", EventReason.NODE_FAILED),
    MaintenanceNodePhase.BLOCKED: ("Warning", EventReason.NODE_FAILED),
}


def maintenance_transition(body: Mapping[str, Any], before: Any, verdict: Verdict) -> None:
    """An Event when a NodeMaintenance (not a dry run) ended or got blocked."""
    if before == verdict.phase.value or (body.get("spec") or {}).get("dryRun"):
        return
    if verdict.phase in _MAINTENANCE_REASONS:
        kind, reason = _MAINTENANCE_REASONS[verdict.phase]
        post(body, kind, reason, verdict.message)


def maintenance_nodes(
    body: Mapping[str, Any], before: Sequence[NodeEntry], after: Sequence[NodeEntry]
) -> None:
    """An Event per node of a NodeMaintenance whose phase changed to one worth telling."""
    for old, new in zip(before, after, strict=True):
        if old.phase is new.phase or new.phase not in _NODE_REASONS:
            continue
        kind, reason = _NODE_REASONS[new.phase]
        text = {
            MaintenanceNodePhase.IN_MAINTENANCE: f"{new.name} drained ({new.migrated} guests "
            "moved); waiting for its maintenance to be declared done",
            MaintenanceNodePhase.RETURNING: f"{new.name}: maintenance done, its guests return",
            MaintenanceNodePhase.DONE: f"{new.name} done ({new.returned} guests returned)",
        }.get(new.phase, f"{new.name} {new.phase.value}: {new.message}")
        post(body, kind, reason, text)
