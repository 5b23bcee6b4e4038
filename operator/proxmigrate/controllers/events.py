"""Kubernetes Events for the lifecycle of drains, placements and clusters.

Every reason the controllers post is here, so `kubectl get events --field-selector
reason=...` and alerting rules have one list to read. Events are posted on transitions
only (a phase or condition that changed), never on a pass that changed nothing.
(VMMigrations' own Events, Started, Retrying, Succeeded, Failed, Cancelled, come from
the runtime.)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, cast

import kopf

from proxmigrate.api.enums import DrainPhase


class Reason(StrEnum):
    DRAIN_STARTED = "DrainStarted"  # the first VMMigrations of a drain exist
    DRAIN_BLOCKED = "DrainBlocked"  # a drain cannot proceed (capacity, invalid, duplicate)
    DRAIN_FINISHED = "DrainFinished"  # every guest moved or skipped
    DRAIN_FAILED = "DrainFailed"  # finished, some guests not moved
    DRIFT_DETECTED = "DriftDetected"  # a placement created VMMigrations to correct drift
    DRIFT_CORRECTED = "DriftCorrected"  # a placement is in sync again
    CLUSTER_READY = "ClusterReady"
    CLUSTER_NOT_READY = "ClusterNotReady"
    TLS_VERIFICATION_OFF = "TLSVerificationOff"


_DRAIN_REASONS = {
    DrainPhase.DRAINING: ("Normal", Reason.DRAIN_STARTED),
    DrainPhase.BLOCKED: ("Warning", Reason.DRAIN_BLOCKED),
    DrainPhase.DRAINED: ("Normal", Reason.DRAIN_FINISHED),
    DrainPhase.FAILED: ("Warning", Reason.DRAIN_FAILED),
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
        post(body, "Normal", Reason.DRIFT_DETECTED, f"{created} VMMigrations created")
    if after.get("inSync") is True and before.get("inSync") is False:
        post(body, "Normal", Reason.DRIFT_CORRECTED, "every selected guest is on its node")
