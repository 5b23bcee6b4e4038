"""A NodeDrain's status documents, derived from its entries (status/drain_entry.py).

Everything in the status besides `status.vms` (counts, progress, phase, conditions, ETA) is
derived from the entries, so a restarted operator rebuilds it from the API server alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition, set_degraded, set_kstatus
from proxmigrate.api.enums import DrainPhase, DrainVMPhase
from proxmigrate.api.timestamps import format_duration, parse_rfc3339, to_rfc3339
from proxmigrate.planning import DrainPlan, PlannedMove, estimate_remaining_seconds
from proxmigrate.status.drain_entry import DrainEntry

DRY_RUN = "DryRun"  # the reason of a dry run's status once its plan is written


def _move_document(move: PlannedMove) -> dict[str, Any]:
    """One planned move as status shows it (order from 1)."""
    return {
        "vmid": move.vmid,
        "name": move.name,
        "memoryBytes": move.memory_bytes,
        "from": move.source,
        "to": move.target,
        "order": move.order + 1,
    }


def plan_document(plan: DrainPlan, now: datetime.datetime) -> dict[str, Any]:
    """`status.plan`: moves in order (1 first), unplaceable guests with reasons."""
    return {
        "generatedTime": to_rfc3339(now),
        "entries": [_move_document(move) for move in plan.moves],
        "unplaceable": [
            {"vmid": vm.vmid, "name": vm.name, "memoryBytes": vm.memory_bytes, "reason": vm.reason}
            for vm in plan.unplaceable
        ],
        "missingMemoryBytes": plan.missing_memory_bytes,
    }


@dataclass(frozen=True)
class DrainCounts:
    total: int
    migrated: int
    failed: int
    skipped: int
    running: int
    memory_total: int
    memory_migrated: int

    @property
    def remaining(self) -> int:
        return self.total - self.migrated - self.failed - self.skipped

    @property
    def progress(self) -> float:
        if self.total == 0:
            return 1.0
        return round((self.migrated + self.failed + self.skipped) / self.total, 4)

    @property
    def phase(self) -> DrainPhase:
        if self.remaining > 0:
            return DrainPhase.DRAINING
        return DrainPhase.FAILED if self.failed else DrainPhase.DRAINED


def count(entries: Sequence[DrainEntry]) -> DrainCounts:
    phases = [entry.phase for entry in entries]
    moving = [e for e in entries if e.phase is not DrainVMPhase.SKIPPED]
    return DrainCounts(
        total=len(entries),
        migrated=phases.count(DrainVMPhase.MIGRATED),
        failed=sum(1 for entry in entries if entry.failed),
        skipped=phases.count(DrainVMPhase.SKIPPED),
        running=phases.count(DrainVMPhase.MIGRATING),
        memory_total=sum(e.memory_bytes or 0 for e in moving),
        memory_migrated=sum(
            e.memory_bytes or 0 for e in moving if e.phase is DrainVMPhase.MIGRATED
        ),
    )


def remaining_seconds(
    remaining_by_link: Mapping[str, int], moved_bytes: int, running: int, elapsed_seconds: float
) -> float | None:
    """Time left from the throughput seen so far; None before the first guest has moved.

    Memory is the size measure (what the drain records per guest); the observed aggregate
    rate (`moved_bytes` in `elapsed_seconds`) is shared evenly by the `running` moves to
    estimate one link's rate. The drain's moves and its returns home both use it.
    """
    if moved_bytes <= 0 or elapsed_seconds <= 0:
        return None
    running = max(1, running)
    link_rate = moved_bytes / elapsed_seconds / running
    return estimate_remaining_seconds(remaining_by_link, link_rate, running)


def eta_fields(seconds: float | None) -> dict[str, Any]:
    """`estimatedSecondsRemaining` and `eta` of an estimate (None: not known yet)."""
    if seconds is None:
        return {"estimatedSecondsRemaining": None, "eta": None}
    return {"estimatedSecondsRemaining": round(seconds), "eta": format_duration(seconds)}


def _drain_remaining_seconds(
    entries: Sequence[DrainEntry], counts: DrainCounts, elapsed_seconds: float
) -> float | None:
    """`remaining_seconds` of the drain's own moves, a link per target."""
    remaining_by_target: dict[str, int] = {}
    for entry in entries:
        if entry.final:
            continue
        target = entry.target or ""
        remaining_by_target[target] = remaining_by_target.get(target, 0) + (entry.memory_bytes or 0)
    return remaining_seconds(
        remaining_by_target, counts.memory_migrated, counts.running, elapsed_seconds
    )


def progress_status(
    entries: Sequence[DrainEntry],
    current: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """Counts, progress, phase, times, ETA and conditions of a drain that is executing."""
    counts = count(entries)
    phase = counts.phase
    started = current.get("startTime") or to_rfc3339(now)
    status: dict[str, Any] = {
        "phase": phase.value,
        "vms": [entry.document() for entry in entries],
        "total": counts.total,
        "migrated": counts.migrated,
        "failed": counts.failed,
        "skipped": counts.skipped,
        "remaining": counts.remaining,
        "progress": counts.progress,
        "memoryBytesTotal": counts.memory_total,
        "memoryBytesMigrated": counts.memory_migrated,
        "startTime": started,
        "completionTime": None,
        "estimatedSecondsRemaining": None,
        "eta": None,
        "observedGeneration": generation,
    }
    if phase is DrainPhase.DRAINING:
        elapsed = (now - parse_rfc3339(started)).total_seconds()
        status.update(eta_fields(_drain_remaining_seconds(entries, counts, elapsed)))
    else:
        status["completionTime"] = current.get("completionTime") or to_rfc3339(now)
        status["estimatedSecondsRemaining"] = 0
    status["conditions"] = _progress_conditions(current, counts, entries, generation, now)
    return status


def _progress_conditions(
    current: Mapping[str, Any],
    counts: DrainCounts,
    entries: Sequence[DrainEntry],
    generation: int | None,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    phase = counts.phase
    summary = (
        f"{counts.migrated} of {counts.total} VMs migrated, {counts.failed} failed, "
        f"{counts.skipped} skipped, {counts.remaining} remaining"
    )
    conditions = current.get("conditions")
    conditions = set_condition(
        conditions,
        ConditionType.READY,
        phase is DrainPhase.DRAINED,
        phase.value,
        summary,
        generation,
        now,
    )
    conditions = set_condition(
        conditions,
        ConditionType.PROGRESSING,
        phase is DrainPhase.DRAINING,
        "Draining" if phase is DrainPhase.DRAINING else "Finished",
        summary,
        generation,
        now,
    )
    failed = [e for e in entries if e.failed]
    unplaced = [e for e in entries if e.unplaceable]
    if failed:
        details = "; ".join(f"{e.vmid}: {e.reason or 'failed'}" for e in failed[:10])
        degraded = (True, "MigrationsFailed", f"{len(failed)} VMs failed: {details}")
    elif unplaced:
        details = "; ".join(f"{e.vmid}: {e.reason}" for e in unplaced[:10])
        degraded = (True, "PartialPlan", f"{len(unplaced)} VMs left on the node: {details}")
    else:
        degraded = (False, "AsExpected", "no failures")
    conditions = set_condition(conditions, ConditionType.DEGRADED, *degraded, generation, now)
    stalled = phase is DrainPhase.FAILED
    return set_kstatus(
        conditions, phase is DrainPhase.DRAINING, stalled, phase.value, summary, generation, now
    )


def waiting_status(
    current: Mapping[str, Any],
    phase: DrainPhase,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
    *,
    degraded: bool,
) -> dict[str, Any]:
    """Status of a drain that moves nothing: Pending, Planning or Blocked, or a dry run
    (reason `DRY_RUN`) whose plan is written: done, Ready unless a real drain would be
    Blocked (`degraded`)."""
    dry_run = reason == DRY_RUN
    blocked = phase is DrainPhase.BLOCKED or (dry_run and degraded)
    ready = dry_run and not degraded
    conditions = set_condition(
        current.get("conditions"), ConditionType.READY, ready, reason, message, generation, now
    )
    conditions = set_condition(
        conditions,
        ConditionType.PROGRESSING,
        phase is DrainPhase.PLANNING and not dry_run,
        reason,
        message,
        generation,
        now,
    )
    reconciling = not (blocked or dry_run)
    conditions = set_kstatus(conditions, reconciling, blocked, reason, message, generation, now)
    conditions = set_degraded(conditions, degraded, reason, message, generation, now)
    return {"phase": phase.value, "observedGeneration": generation, "conditions": conditions}
