"""A NodeDrain's return home (`returnGuests`, ended by `maintenanceDone`), on its entries.

Pure, like status/drain.py: the controller (controllers/drain_returns.py) stops the drain,
plans the return with `planning.plan_return` and hands the moves to VMMigrations; this
module keeps the entries' `returnPhase` and derives the status from them, so a restarted
operator rebuilds it from the API server alone. The drain's own fields (`phase` of each
guest, `migrated`, `failed`, ...) stay its record; the return has its own.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition, set_kstatus
from proxmigrate.api.enums import DrainPhase, DrainReturnPhase, DrainVMPhase, MigrationPhase
from proxmigrate.api.migration import migration_phase
from proxmigrate.api.timestamps import parse_rfc3339, to_rfc3339
from proxmigrate.planning.returns import Departure, ReturnPlan
from proxmigrate.status.drain import eta_fields, remaining_seconds
from proxmigrate.status.drain_entry import DrainEntry, parse_entries

# Why a planned drain move did not happen: its VMMigration had not started when the
# maintenance was declared done, so the guest never left.
NOT_MOVED = "not moved: the maintenance was declared done first"
FINAL_RETURN_PHASES = frozenset(
    {DrainReturnPhase.RETURNED, DrainReturnPhase.SKIPPED, DrainReturnPhase.FAILED}
)
IN_FLIGHT_RETURN_PHASES = frozenset({DrainReturnPhase.QUEUED, DrainReturnPhase.MIGRATING})
# The drain phases whose figures (gauges, progress line) are the return's, not the drain's.
RETURN_DRAIN_PHASES = frozenset({DrainPhase.RETURNING, DrainPhase.RETURNED})
_RETURN_PHASE_OF_MIGRATION = {
    MigrationPhase.PENDING: DrainReturnPhase.QUEUED,
    MigrationPhase.QUEUED: DrainReturnPhase.QUEUED,
    MigrationPhase.RUNNING: DrainReturnPhase.MIGRATING,
    MigrationPhase.SUCCEEDED: DrainReturnPhase.RETURNED,
    MigrationPhase.FAILED: DrainReturnPhase.FAILED,
    MigrationPhase.CANCELLED: DrainReturnPhase.FAILED,
}


def stop_draining(entries: Sequence[DrainEntry], withdrawn: Set[int]) -> list[DrainEntry]:
    """The drain once its maintenance is declared done: the moves not handed over yet, and
    those whose VMMigration was `withdrawn` before it started, are Skipped (the guest
    stays home); running moves go on and are returned once they end."""
    return [
        entry.but(phase=DrainVMPhase.SKIPPED, reason=NOT_MOVED)
        if entry.phase is DrainVMPhase.PENDING or (entry.vmid in withdrawn and entry.in_flight)
        else entry
        for entry in entries
    ]


def unplanned(entries: Sequence[DrainEntry]) -> list[DrainEntry]:
    """Guests the drain moved whose return is not planned yet, in the order they left."""
    moved = [e for e in entries if e.phase is DrainVMPhase.MIGRATED and e.return_phase is None]
    return sorted(moved, key=lambda entry: entry.order or 0)


def departures(entries: Sequence[DrainEntry]) -> list[Departure]:
    """What `plan_return` takes: the unplanned guests a VMMigration of the drain moved
    (a guest that left the node some other way is not the drain's to bring back)."""
    return [
        Departure(entry.vmid, entry.source, entry.target)
        for entry in unplanned(entries)
        if entry.migration and entry.target
    ]


def with_return_plan(entries: Sequence[DrainEntry], plan: ReturnPlan) -> list[DrainEntry]:
    """Entries with the plan's returns Pending and its skipped guests ReturnSkipped with
    their reason; a guest the drain did not move itself is skipped as such."""
    moves = {move.vmid for move in plan.moves}
    skipped = {vm.vmid: vm.reason for vm in plan.skipped}
    waiting = {entry.vmid for entry in unplanned(entries)}
    updated = []
    for entry in entries:
        if entry.vmid in moves:
            entry = entry.but(return_phase=DrainReturnPhase.PENDING)
        elif entry.vmid in skipped:
            entry = entry.but(
                return_phase=DrainReturnPhase.SKIPPED, return_reason=skipped[entry.vmid]
            )
        elif entry.vmid in waiting:
            reason = f"left {entry.source} outside this drain; not returned"
            entry = entry.but(return_phase=DrainReturnPhase.SKIPPED, return_reason=reason)
        updated.append(entry)
    return updated


def advance_returns(
    entries: Sequence[DrainEntry],
    children: Mapping[int, Mapping[str, Any]],
    location: Mapping[int, str],
) -> list[DrainEntry]:
    """Returns moved forward from their VMMigrations (`children` by vmid) and where each
    guest is (`location`); a return not handed over yet whose guest moved or vanished
    meanwhile is skipped instead of sent from the wrong node."""
    return [_advanced(entry, children.get(entry.vmid), location) for entry in entries]


def _advanced(
    entry: DrainEntry, child: Mapping[str, Any] | None, location: Mapping[int, str]
) -> DrainEntry:
    phase = entry.return_phase
    if phase is None or phase in FINAL_RETURN_PHASES:
        return entry
    if child is not None:
        child_phase = migration_phase(child)
        moved = entry.but(
            return_phase=_RETURN_PHASE_OF_MIGRATION[child_phase],
            return_migration=child["metadata"]["name"],
        )
        if child_phase in (MigrationPhase.FAILED, MigrationPhase.CANCELLED):
            status = child.get("status") or {}
            reason = str(status.get("message") or status.get("reason") or child_phase)
            moved = moved.but(return_reason=reason)
        return moved
    if phase in IN_FLIGHT_RETURN_PHASES:
        reason = f"VMMigration {entry.return_migration} was deleted before it ended"
        return entry.but(return_phase=DrainReturnPhase.FAILED, return_reason=reason)
    where = location.get(entry.vmid)
    if where is None:
        reason = "no longer in the cluster"
    elif where != entry.target:
        reason = f"moved again meanwhile: on {where}, the drain parked it on {entry.target}"
    else:
        return entry
    return entry.but(return_phase=DrainReturnPhase.SKIPPED, return_reason=reason)


def due_returns(entries: Sequence[DrainEntry], window: int | None) -> list[DrainEntry]:
    """Pending returns to hand to VMMigrations now, in the order the guests left, keeping
    at most `window` in flight (None: all; the cluster's engine still throttles)."""
    pending = sorted(
        (e for e in entries if e.return_phase is DrainReturnPhase.PENDING),
        key=lambda entry: entry.order or 0,
    )
    if window is not None:
        in_flight = sum(1 for e in entries if e.return_phase in IN_FLIGHT_RETURN_PHASES)
        pending = pending[: max(0, window - in_flight)]
    return pending


@dataclass(frozen=True)
class ReturnCounts:
    returned: int
    skipped: int
    failed: int
    under_way: int  # Pending, Queued or Migrating
    draining: int  # drain moves still running: the return waits for them
    unplanned: int  # moved guests whose return is not planned yet

    @property
    def done(self) -> bool:
        return not self.remaining

    @property
    def remaining(self) -> int:
        """Guests still to come home: returns under way, and the guests whose return is
        not planned yet or whose drain move still runs."""
        return self.under_way + self.draining + self.unplanned

    @property
    def progress(self) -> float:
        """Share of the return that ended (returned, skipped or failed), 0 to 1."""
        ended = self.returned + self.skipped + self.failed
        total = ended + self.remaining
        return round(ended / total, 4) if total else 1.0

    @property
    def summary(self) -> str:
        total = self.returned + self.skipped + self.failed + self.under_way + self.unplanned
        return (
            f"{self.returned} of {total} guests returned home, {self.skipped} skipped, "
            f"{self.failed} failed, {self.under_way} under way"
        )


def return_counts(entries: Sequence[DrainEntry]) -> ReturnCounts:
    phases = [entry.return_phase for entry in entries]
    under_way = sum(1 for p in phases if p is not None and p not in FINAL_RETURN_PHASES)
    return ReturnCounts(
        returned=phases.count(DrainReturnPhase.RETURNED),
        skipped=phases.count(DrainReturnPhase.SKIPPED),
        failed=phases.count(DrainReturnPhase.FAILED),
        under_way=under_way,
        draining=sum(1 for entry in entries if entry.in_flight),
        unplanned=len(unplanned(entries)),
    )


def status_return_counts(status: Mapping[str, Any]) -> ReturnCounts | None:
    """The return's counts of a NodeDrain status document once it sends its guests home;
    None before, when the drain's own figures are the ones to show."""
    if status.get("phase") not in RETURN_DRAIN_PHASES:
        return None
    return return_counts(parse_entries(status.get("vms") or []))


def return_seconds(
    entries: Sequence[DrainEntry], started: str, now: datetime.datetime
) -> float | None:
    """Time left of the returns under way, from their throughput since `started` (the
    return's start), a link per node the guests are parked on; None before one is home."""
    remaining_by_link: dict[str, int] = {}
    returned = running = 0
    for entry in entries:
        size = entry.memory_bytes or 0
        if entry.return_phase is DrainReturnPhase.RETURNED:
            returned += size
        elif entry.return_phase is not None and entry.return_phase not in FINAL_RETURN_PHASES:
            link = entry.target or ""
            remaining_by_link[link] = remaining_by_link.get(link, 0) + size
            running += entry.return_phase is DrainReturnPhase.MIGRATING
    elapsed = (now - parse_rfc3339(started)).total_seconds()
    return remaining_seconds(remaining_by_link, returned, running, elapsed)


def return_status(
    entries: Sequence[DrainEntry],
    current: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
    waiting: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Phase, return counts, ETA and conditions of a drain whose maintenance is declared
    done; `waiting` is (reason, message) while the return cannot start (drain moves
    running, home node offline), its ETA unknown then. Merged over the drain's own
    progress status: `estimatedSecondsRemaining` and `eta` become the return's."""
    counts = return_counts(entries)
    started = current.get("returnStartTime") or (None if waiting else to_rfc3339(now))
    returned = counts.done and waiting is None
    phase = DrainPhase.RETURNED if returned else DrainPhase.RETURNING
    reason, message = waiting or (phase.value, _message(entries, counts))
    conditions = set_condition(
        current.get("conditions"), ConditionType.READY, returned, reason, message, generation, now
    )
    conditions = set_condition(
        conditions, ConditionType.PROGRESSING, not returned, reason, message, generation, now
    )
    failed = [e for e in entries if e.return_phase is DrainReturnPhase.FAILED]
    if failed:
        details = "; ".join(f"{e.vmid}: {e.return_reason or 'failed'}" for e in failed[:10])
        degraded = (True, "ReturnsFailed", f"{len(failed)} returns failed: {details}")
    else:
        degraded = (False, "AsExpected", "no failures")
    conditions = set_condition(conditions, ConditionType.DEGRADED, *degraded, generation, now)
    conditions = set_kstatus(conditions, not returned, False, reason, message, generation, now)
    if returned:
        eta: dict[str, Any] = {"estimatedSecondsRemaining": 0, "eta": None}
    elif started is None or waiting:
        eta = eta_fields(None)
    else:
        eta = eta_fields(return_seconds(entries, started, now))
    return {
        "phase": phase.value,
        "returned": counts.returned,
        "returnSkipped": counts.skipped,
        "returnFailed": counts.failed,
        "returnStartTime": started,
        "conditions": conditions,
        **eta,
    }


def _message(entries: Sequence[DrainEntry], counts: ReturnCounts) -> str:
    """The counts, and the first skipped guests with their reasons."""
    skipped = [e for e in entries if e.return_phase is DrainReturnPhase.SKIPPED]
    if not skipped:
        return counts.summary
    details = "; ".join(f"{e.vmid}: {e.return_reason}" for e in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"{counts.summary}; skipped {details}{more}"
