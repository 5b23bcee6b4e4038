"""Kubernetes Events for the lifecycle of drains, placements and clusters.

Events are posted on transitions only (a phase or condition that changed), never on a
pass that changed nothing. Every reason, the VMMigrations' own ones the runtime posts
included, is in `api.events.Reason`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from proxmigrate.api.enums import DrainPhase
from proxmigrate.api.events import EventReason

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
