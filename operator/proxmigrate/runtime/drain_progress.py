"""A NodeDrain's status from its plan and its VMMigrations (pure: no I/O, time passed in).

`status.vms` is the drain's durable state: one entry per guest, written when the plan is
accepted, then advanced from what each guest's VMMigration reports. Everything else in the
status (counts, progress, phase, conditions, ETA) is derived from those entries, so a
restarted operator rebuilds it from the API server alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition
from proxmigrate.api.enums import DrainPhase, DrainVMPhase, MigrationPhase
from proxmigrate.api.migration import migration_phase
from proxmigrate.api.timestamps import format_duration, parse_rfc3339, to_rfc3339
from proxmigrate.planning import DrainPlan, PlannedMove, estimate_remaining_seconds

Entry = dict[str, Any]

FINAL_VM_PHASES = frozenset(
    {DrainVMPhase.MIGRATED, DrainVMPhase.FAILED, DrainVMPhase.SKIPPED, DrainVMPhase.CANCELLED}
)
IN_FLIGHT_VM_PHASES = frozenset({DrainVMPhase.QUEUED, DrainVMPhase.MIGRATING})
_VM_PHASE_OF_MIGRATION = {
    MigrationPhase.PENDING: DrainVMPhase.QUEUED,
    MigrationPhase.QUEUED: DrainVMPhase.QUEUED,
    MigrationPhase.RUNNING: DrainVMPhase.MIGRATING,
    MigrationPhase.SUCCEEDED: DrainVMPhase.MIGRATED,
    MigrationPhase.FAILED: DrainVMPhase.FAILED,
    MigrationPhase.CANCELLED: DrainVMPhase.FAILED,  # cancelled by someone else: not moved
}
PRIORITY_MAX = 1000  # VMMigration.spec.priority bounds (crds/vmmigrations.yaml)
PRIORITY_MIN = -1000


def migration_priority(order: int) -> int:
    """Earlier plan positions start first (the engine runs higher priorities first); beyond
    2000 guests the priorities tie and the engine's FIFO order, which is plan order, holds."""
    return max(PRIORITY_MIN, PRIORITY_MAX - order)


def entry_phase(entry: Mapping[str, Any]) -> DrainVMPhase:
    return DrainVMPhase(entry["phase"])


def _move_document(move: PlannedMove) -> Entry:
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


def plan_entries(plan: DrainPlan) -> list[Entry]:
    """`status.vms` for a plan: moves Pending in order, then skipped and unplaceable guests
    (Skipped with their reason; a drain only starts with unplaceable ones under allowPartial)."""
    entries: list[Entry] = [
        {**_move_document(move), "phase": DrainVMPhase.PENDING.value} for move in plan.moves
    ]
    entries += [
        {
            "vmid": vm.vmid,
            "name": vm.name,
            "from": plan.node,
            "phase": DrainVMPhase.SKIPPED.value,
            "reason": vm.reason,
        }
        for vm in plan.skipped
    ]
    entries += [
        {
            "vmid": vm.vmid,
            "name": vm.name,
            "memoryBytes": vm.memory_bytes,
            "from": plan.node,
            "phase": DrainVMPhase.SKIPPED.value,
            "reason": f"unplaceable: {vm.reason}",
        }
        for vm in plan.unplaceable
    ]
    return entries


def without_moves_onto(
    entries: Sequence[Mapping[str, Any]], cordoned: Set[str], withdrawn: Set[int] = frozenset()
) -> list[Entry]:
    """`entries` less the planned moves not handed over yet whose target got cordoned, and
    less the guests whose VMMigration was `withdrawn`: both are planned again, elsewhere,
    like new arrivals."""
    return [
        dict(entry)
        for entry in entries
        if int(entry["vmid"]) not in withdrawn
        and not (entry_phase(entry) is DrainVMPhase.PENDING and entry.get("to") in cordoned)
    ]


def new_arrivals(entries: Sequence[Mapping[str, Any]], plan: DrainPlan) -> list[Entry]:
    """Entries for guests of a fresh plan that the drain does not know yet (they appeared on
    the node during the drain), ordered after the existing ones."""
    known = {int(entry["vmid"]) for entry in entries}
    last_order = max((int(entry.get("order") or 0) for entry in entries), default=0)
    arrivals = [entry for entry in plan_entries(plan) if int(entry["vmid"]) not in known]
    for entry in arrivals:
        if "order" in entry:
            last_order += 1
            entry["order"] = last_order
    return arrivals


def advance(
    entries: Sequence[Mapping[str, Any]],
    children: Mapping[int, Mapping[str, Any]],
    location: Mapping[int, str],
) -> list[Entry]:
    """Entries moved forward from the VMMigrations (`children` by vmid) and where each guest
    is now (`location` by vmid; absent: the guest no longer exists)."""
    advanced: list[Entry] = []
    for original in entries:
        entry = dict(original)
        phase = entry_phase(entry)
        vmid = int(entry["vmid"])
        child = children.get(vmid)
        if phase in FINAL_VM_PHASES:
            pass
        elif child is not None:
            status = child.get("status") or {}
            child_phase = migration_phase(child)
            entry["phase"] = _VM_PHASE_OF_MIGRATION[child_phase].value
            entry["migration"] = child["metadata"]["name"]
            entry["to"] = child["spec"]["target"]
            if child_phase in (MigrationPhase.FAILED, MigrationPhase.CANCELLED):
                entry["reason"] = str(status.get("message") or status.get("reason") or child_phase)
        elif vmid not in location:
            entry["phase"] = DrainVMPhase.SKIPPED.value
            entry["reason"] = "the VM no longer exists"
        elif location[vmid] != entry["from"]:
            entry["phase"] = DrainVMPhase.MIGRATED.value
            entry["reason"] = f"left the node outside this drain (now on {location[vmid]})"
        elif phase in IN_FLIGHT_VM_PHASES:
            entry["phase"] = DrainVMPhase.FAILED.value
            entry["reason"] = f"VMMigration {entry.get('migration')} was deleted before it ended"
        advanced.append(entry)
    return advanced


def due_for_migration(entries: Sequence[Mapping[str, Any]], window: int | None) -> list[Entry]:
    """Pending entries to hand to VMMigrations now, in plan order, keeping at most `window`
    in flight (None: all of them; the cluster's engine still throttles)."""
    pending = sorted(
        (dict(entry) for entry in entries if entry_phase(entry) is DrainVMPhase.PENDING),
        key=lambda entry: int(entry.get("order") or 0),
    )
    if window is None:
        return pending
    in_flight = sum(1 for entry in entries if entry_phase(entry) in IN_FLIGHT_VM_PHASES)
    return pending[: max(0, window - in_flight)]


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


def count(entries: Sequence[Mapping[str, Any]]) -> DrainCounts:
    phases = [entry_phase(entry) for entry in entries]
    moving = [e for e in entries if entry_phase(e) is not DrainVMPhase.SKIPPED]
    return DrainCounts(
        total=len(entries),
        migrated=phases.count(DrainVMPhase.MIGRATED),
        failed=phases.count(DrainVMPhase.FAILED) + phases.count(DrainVMPhase.CANCELLED),
        skipped=phases.count(DrainVMPhase.SKIPPED),
        running=phases.count(DrainVMPhase.MIGRATING),
        memory_total=sum(int(e.get("memoryBytes") or 0) for e in moving),
        memory_migrated=sum(
            int(e.get("memoryBytes") or 0)
            for e in moving
            if entry_phase(e) is DrainVMPhase.MIGRATED
        ),
    )


def remaining_seconds(
    entries: Sequence[Mapping[str, Any]], counts: DrainCounts, elapsed_seconds: float
) -> float | None:
    """Time left from the throughput seen so far; None before the first guest has moved.

    Memory is the size measure (what the drain records per guest); the observed aggregate
    rate is shared evenly by the moves running now to estimate one link's rate. `counts` are
    `count(entries)`.
    """
    if counts.memory_migrated <= 0 or elapsed_seconds <= 0:
        return None
    remaining_by_target: dict[str, int] = {}
    for entry in entries:
        if entry_phase(entry) in FINAL_VM_PHASES:
            continue
        target = str(entry.get("to") or "")
        remaining_by_target[target] = remaining_by_target.get(target, 0) + int(
            entry.get("memoryBytes") or 0
        )
    aggregate_rate = counts.memory_migrated / elapsed_seconds
    running = max(1, counts.running)
    return estimate_remaining_seconds(remaining_by_target, aggregate_rate / running, running)


def progress_status(
    entries: Sequence[Mapping[str, Any]],
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
        "vms": [dict(entry) for entry in entries],
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
        seconds = remaining_seconds(entries, counts, elapsed)
        if seconds is not None:
            status["estimatedSecondsRemaining"] = round(seconds)
            status["eta"] = format_duration(seconds)
    else:
        status["completionTime"] = current.get("completionTime") or to_rfc3339(now)
        status["estimatedSecondsRemaining"] = 0
    status["conditions"] = _progress_conditions(current, counts, entries, generation, now)
    return status


def _progress_conditions(
    current: Mapping[str, Any],
    counts: DrainCounts,
    entries: Sequence[Mapping[str, Any]],
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
    failed = [e for e in entries if entry_phase(e) in (DrainVMPhase.FAILED, DrainVMPhase.CANCELLED)]
    unplaced = [e for e in entries if str(e.get("reason", "")).startswith("unplaceable:")]
    if failed:
        details = "; ".join(f"{e['vmid']}: {e.get('reason', 'failed')}" for e in failed[:10])
        degraded = (True, "MigrationsFailed", f"{len(failed)} VMs failed: {details}")
    elif unplaced:
        details = "; ".join(f"{e['vmid']}: {e['reason']}" for e in unplaced[:10])
        degraded = (True, "PartialPlan", f"{len(unplaced)} VMs left on the node: {details}")
    else:
        degraded = (False, "AsExpected", "no failures")
    return set_condition(conditions, ConditionType.DEGRADED, *degraded, generation, now)


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
    """Status of a drain that moves nothing: Pending, Planning (dry run) or Blocked."""
    conditions = set_condition(
        current.get("conditions"), ConditionType.READY, False, reason, message, generation, now
    )
    conditions = set_condition(
        conditions,
        ConditionType.PROGRESSING,
        phase is DrainPhase.PLANNING,
        reason,
        message,
        generation,
        now,
    )
    conditions = set_condition(
        conditions,
        ConditionType.DEGRADED,
        degraded,
        reason if degraded else "AsExpected",
        message if degraded else "nothing wrong",
        generation,
        now,
    )
    return {"phase": phase.value, "observedGeneration": generation, "conditions": conditions}
