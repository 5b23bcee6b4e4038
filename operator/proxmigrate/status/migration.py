"""VMMigration status documents, built from what happened (pure; no I/O, time passed in).

Every write the operator makes to a VMMigration's status comes from here, so the mapping
from engine decisions and classified failures to phases is testable on its own.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition
from proxmigrate.api.enums import AttemptOutcome, MigrationPhase
from proxmigrate.api.timestamps import parse_rfc3339, to_rfc3339
from proxmigrate.failures import Failure, Reason

Status = dict[str, Any]


def _ts(epoch: float) -> str:
    return to_rfc3339(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


def _now(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _state(
    current: Mapping[str, Any],
    ready: bool | None,
    reason: str,
    message: str,
    now: float,
    *,
    stalled: bool = False,
) -> Status:
    """`observedGeneration` and the conditions: `Ready` (None: not decided yet),
    `Progressing` (True until it is), and `Stalled` on a failure no controller will undo, so
    that kstatus (Flux's `wait`) reads a Failed VMMigration as failed, not in progress."""
    generation = current.get("observedGeneration")
    at = _now(now)
    conditions = set_condition(
        current.get("conditions"), ConditionType.READY, ready, reason, message, generation, at
    )
    conditions = set_condition(
        conditions, ConditionType.PROGRESSING, ready is None, reason, message, generation, at
    )
    if stalled:
        conditions = set_condition(
            conditions, ConditionType.STALLED, True, reason, message, generation, at
        )
    return {"observedGeneration": generation, "conditions": conditions}


def queued(current: Mapping[str, Any], source: str, now: float, message: str) -> Status:
    """Accepted and waiting in the engine's queue."""
    return {
        "phase": MigrationPhase.QUEUED.value,
        "sourceNode": source,
        "message": message,
        **_state(current, None, MigrationPhase.QUEUED, message, now),
    }


def start_requested(current: Mapping[str, Any], source: str, attempt: int, now: float) -> Status:
    """Intent, written before the POST: a restarted operator looks for the task first."""
    attempts = list(current.get("attempts") or [])
    attempts.append({"startTime": _ts(now), "outcome": AttemptOutcome.RUNNING.value})
    message = f"attempt {attempt}: migration requested from {source}"
    return {
        "phase": MigrationPhase.RUNNING.value,
        "sourceNode": source,
        "upid": None,
        "startRequestedTime": _ts(now),
        "startTime": current.get("startTime") or _ts(now),
        "attemptCount": attempt,
        "attempts": attempts,
        "nextAttemptTime": None,
        "message": message,
        **_state(current, None, MigrationPhase.RUNNING, message, now),
    }


def not_sent(current: Mapping[str, Any]) -> Status:
    """Take back an intent whose request never reached PVE (no task was found for it after a
    restart): that attempt did not happen, so it neither counts nor stays open."""
    attempts = list(current.get("attempts") or [])
    if (
        not attempts
        or attempts[-1].get("upid")
        or attempts[-1].get("outcome") != AttemptOutcome.RUNNING
    ):
        return {}
    count = int(current.get("attemptCount") or len(attempts))
    return {"attempts": attempts[:-1] or None, "attemptCount": max(count - 1, 0) or None}


def started(current: Mapping[str, Any], upid: str, now: float) -> Status:
    """The POST answered with a UPID; recorded at once so a restart resumes by UPID."""
    attempts = [dict(a) for a in current.get("attempts") or []]
    if attempts:
        attempts[-1]["upid"] = upid
    return {
        "upid": upid,
        "attempts": attempts,
        "message": f"task {upid} running",
        **_state(current, None, MigrationPhase.RUNNING, f"task {upid} running", now),
    }


def _close_attempt(
    current: Mapping[str, Any],
    outcome: AttemptOutcome,
    now: float,
    failure: Failure | None,
    message: str | None = None,
) -> list[dict[str, Any]]:
    attempts = [dict(a) for a in current.get("attempts") or []]
    if not attempts:
        attempts.append({"startTime": _ts(now)})
    last = attempts[-1]
    last["outcome"] = outcome.value
    last["endTime"] = _ts(now)
    if failure is not None:
        last.update(
            reason=failure.reason.value,
            transient=failure.transient,
            phase=failure.phase.value,
            decisiveLine=failure.decisive_line[:1024],
        )
    if message:
        last["message"] = message[:1024]
    return attempts


def _duration(current: Mapping[str, Any], now: float) -> float | None:
    start = current.get("startTime")
    if not start:
        return None
    begun = parse_rfc3339(str(start)).timestamp()
    return round(max(0.0, now - begun), 3)


def succeeded(
    current: Mapping[str, Any], now: float, failure: Failure | None = None, note: str = ""
) -> Status:
    """Done: the VM runs on the target (with `failure` set: moved, but the task had problems)."""
    outcome = (
        AttemptOutcome.SUCCEEDED if failure is None else AttemptOutcome.SUCCEEDED_WITH_PROBLEMS
    )
    message = note or (
        "migrated" if failure is None else f"migrated with problems: {failure.summary}"
    )
    return {
        "phase": MigrationPhase.SUCCEEDED.value,
        "attempts": _close_attempt(current, outcome, now, failure, message),
        "completionTime": _ts(now),
        "durationSeconds": _duration(current, now),
        "reason": failure.reason.value if failure is not None else None,
        "message": message,
        **_state(current, True, MigrationPhase.SUCCEEDED, message, now),
    }


def retrying(
    current: Mapping[str, Any], now: float, failure: Failure, retry_at: float, attempt: int
) -> Status:
    message = (
        f"attempt {attempt} failed ({failure.summary}); transient, retrying at {_ts(retry_at)}"
    )
    return {
        "phase": MigrationPhase.QUEUED.value,
        "upid": None,
        "attempts": _close_attempt(current, AttemptOutcome.FAILED, now, failure),
        "reason": failure.reason.value,
        "nextAttemptTime": _ts(retry_at),
        "message": message,
        **_state(current, None, "Retrying", message, now),
    }


def failed(
    current: Mapping[str, Any],
    now: float,
    reason: Reason,
    message: str,
    failure: Failure | None = None,
) -> Status:
    """Ended for good: a permanent failure, attempts used up, or a request that cannot be met."""
    status: Status = {
        "phase": MigrationPhase.FAILED.value,
        "completionTime": _ts(now),
        "durationSeconds": _duration(current, now),
        "reason": reason.value,
        "message": message,
        **_state(current, False, reason.condition_reason, message, now, stalled=True),
    }
    if current.get("attempts") and current.get("phase") == MigrationPhase.RUNNING:
        status["attempts"] = _close_attempt(current, AttemptOutcome.FAILED, now, failure, message)
    return status


def cancelled(current: Mapping[str, Any], now: float, message: str) -> Status:
    status: Status = {
        "phase": MigrationPhase.CANCELLED.value,
        "completionTime": _ts(now),
        "reason": Reason.CANCELLED.value,
        "message": message,
        **_state(current, False, MigrationPhase.CANCELLED, message, now),
    }
    if current.get("phase") == MigrationPhase.RUNNING and current.get("attempts"):
        status["attempts"] = _close_attempt(current, AttemptOutcome.CANCELLED, now, None, message)
    return status


def merged(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with a status patch applied, as the API server's merge patch would."""
    result = dict(current)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def attempt_start_epoch(attempts: Sequence[Mapping[str, Any]]) -> float | None:
    """When the last attempt was requested (epoch seconds), from its RFC 3339 start time."""
    if not attempts:
        return None
    text = attempts[-1].get("startTime")
    return parse_rfc3339(str(text)).timestamp() if text else None
