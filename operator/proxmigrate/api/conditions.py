"""Conditions in the shape of metav1.Condition, kept as plain dicts for status patches."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from proxmigrate.api.timestamps import to_rfc3339

Condition = dict[str, Any]

# metav1.Condition's validation of `reason` (the API server rejects anything else)
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


class ConditionType(StrEnum):
    """Condition types the controllers set (Kubernetes API conventions: adjectives)."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    BLOCKED = "Blocked"
    IN_SYNC = "InSync"
    # kstatus' pair (sigs.k8s.io/cli-utils kstatus, read by Flux's `wait`): Reconciling True
    # reads as in progress, Stalled True as failed, whatever Ready says.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _status_text(status: bool | str | None) -> str:
    if status is None:
        return ConditionStatus.UNKNOWN.value
    if isinstance(status, bool):
        return ConditionStatus.TRUE.value if status else ConditionStatus.FALSE.value
    return ConditionStatus(status).value


def set_condition(
    conditions: Sequence[Condition] | None,
    type: str,  # metav1.Condition's field name
    status: bool | str | None,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """A new condition list with `type` set; the input is left untouched.

    `lastTransitionTime` moves only when the status changes, so it tells how long the object
    has been in its state; reason, message and generation always take the new values. The
    condition keeps its position, a new one is appended. `status` may be a bool, None
    (Unknown) or "True"/"False"/"Unknown".
    """
    if not _REASON.fullmatch(reason):
        raise ValueError(f"condition reason must be CamelCase like 'NodeOffline', got {reason!r}")
    status_text = _status_text(status)
    updated: list[Condition] = []
    found = False
    for condition in conditions or ():
        if condition.get("type") != type:
            updated.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != status_text or "lastTransitionTime" not in condition
        updated.append(
            _condition(
                type,
                status_text,
                reason,
                message,
                observed_generation,
                to_rfc3339(now) if changed else condition["lastTransitionTime"],
            )
        )
    if not found:
        updated.append(
            _condition(type, status_text, reason, message, observed_generation, to_rfc3339(now))
        )
    return updated


def set_degraded(
    conditions: Sequence[Condition] | None,
    degraded: bool,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """`Degraded` carrying the object's reason and message when degraded, else `AsExpected`."""
    return set_condition(
        conditions,
        ConditionType.DEGRADED,
        degraded,
        reason if degraded else "AsExpected",
        message if degraded else "nothing wrong",
        observed_generation,
        now,
    )


def set_kstatus(
    conditions: list[dict[str, Any]],
    reconciling: bool,
    stalled: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """kstatus' pair (Flux's `wait`): Reconciling while work goes on; Stalled when the object
    ended failed or is blocked until someone acts, so it reads as failed, not in progress.
    NodeDrain, its return home and NodeMaintenance write it alike."""
    settled = "Settled" if not (reconciling or stalled) else reason
    conditions = set_condition(
        conditions,
        ConditionType.RECONCILING,
        reconciling,
        reason if reconciling else settled,
        message,
        generation,
        now,
    )
    return set_condition(
        conditions,
        ConditionType.STALLED,
        stalled,
        reason if stalled else settled,
        message,
        generation,
        now,
    )


def _condition(
    type: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int | None,
    last_transition_time: str,
) -> Condition:
    condition: Condition = {
        "type": str(type),
        "status": status,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": last_transition_time,
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    return condition


def find_condition(conditions: Sequence[Condition] | None, type: str) -> Condition | None:
    """The condition of `type`, or None."""
    return next((c for c in conditions or () if c.get("type") == type), None)


def is_condition_true(conditions: Sequence[Condition] | None, type: str) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.get("status") == ConditionStatus.TRUE.value
