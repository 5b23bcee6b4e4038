"""A NodeDrain's bookkeeping on its entries (pure: no I/O, time passed in).

The controllers hold `status.vms` as the documents the API server returns; each function
here parses them once into typed entries (`status.drain_entry.DrainEntry`), works on those and
answers documents again. The status documents themselves are built in `status.drain`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence, Set
from typing import Any

from proxmigrate.api.enums import DrainVMPhase, MigrationPhase
from proxmigrate.api.migration import migration_phase
from proxmigrate.planning import DrainPlan
from proxmigrate.status import drain as documents
from proxmigrate.status.drain import plan_document, waiting_status
from proxmigrate.status.drain_entry import DrainEntry, parse_entries
from proxmigrate.status.drain_entry import plan_entries as plan_entries_of

# `plan_document` and `waiting_status` take no entries: the controllers find them here too.
__all__ = [
    "Entry",
    "advance",
    "due_for_migration",
    "entry_phase",
    "migration_priority",
    "new_arrivals",
    "plan_document",
    "plan_entries",
    "progress_status",
    "waiting_status",
    "without_moves_onto",
]

Entry = dict[str, Any]

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


def _documents(entries: Sequence[DrainEntry]) -> list[Entry]:
    return [entry.document() for entry in entries]


def plan_entries(plan: DrainPlan) -> list[Entry]:
    """`status.vms` for a plan (see `status.drain_entry.plan_entries`)."""
    return _documents(plan_entries_of(plan))


def without_moves_onto(
    entries: Sequence[Mapping[str, Any]], cordoned: Set[str], withdrawn: Set[int] = frozenset()
) -> list[Entry]:
    """`entries` less the planned moves not handed over yet whose target got cordoned, and
    less the guests whose VMMigration was `withdrawn`: both are planned again, elsewhere,
    like new arrivals."""
    return _documents(
        [
            entry
            for entry in parse_entries(entries)
            if entry.vmid not in withdrawn
            and not (entry.phase is DrainVMPhase.PENDING and entry.target in cordoned)
        ]
    )


def new_arrivals(entries: Sequence[Mapping[str, Any]], plan: DrainPlan) -> list[Entry]:
    """Entries for guests of a fresh plan that the drain does not know yet (they appeared on
    the node during the drain), ordered after the existing ones."""
    known = parse_entries(entries)
    vmids = {entry.vmid for entry in known}
    last_order = max((entry.order or 0 for entry in known), default=0)
    arrivals = []
    for entry in plan_entries_of(plan):
        if entry.vmid in vmids:
            continue
        if entry.order is not None:
            last_order += 1
            entry = entry.but(order=last_order)
        arrivals.append(entry)
    return _documents(arrivals)


def _advanced(
    entry: DrainEntry, child: Mapping[str, Any] | None, location: Mapping[int, str]
) -> DrainEntry:
    if entry.final:
        return entry
    if child is not None:
        status = child.get("status") or {}
        child_phase = migration_phase(child)
        moved = entry.but(
            phase=_VM_PHASE_OF_MIGRATION[child_phase],
            migration=child["metadata"]["name"],
            target=child["spec"]["target"],
        )
        if child_phase in (MigrationPhase.FAILED, MigrationPhase.CANCELLED):
            reason = str(status.get("message") or status.get("reason") or child_phase)
            moved = moved.but(reason=reason)
        return moved
    if entry.vmid not in location:
        return entry.but(phase=DrainVMPhase.SKIPPED, reason="the VM no longer exists")
    if location[entry.vmid] != entry.source:
        reason = f"left the node outside this drain (now on {location[entry.vmid]})"
        return entry.but(phase=DrainVMPhase.MIGRATED, reason=reason)
    if entry.in_flight:
        reason = f"VMMigration {entry.migration} was deleted before it ended"
        return entry.but(phase=DrainVMPhase.FAILED, reason=reason)
    return entry


def advance(
    entries: Sequence[Mapping[str, Any]],
    children: Mapping[int, Mapping[str, Any]],
    location: Mapping[int, str],
) -> list[Entry]:
    """Entries moved forward from the VMMigrations (`children` by vmid) and where each guest
    is now (`location` by vmid; absent: the guest no longer exists)."""
    return _documents(
        [_advanced(entry, children.get(entry.vmid), location) for entry in parse_entries(entries)]
    )


def due_for_migration(entries: Sequence[Mapping[str, Any]], window: int | None) -> list[Entry]:
    """Pending entries to hand to VMMigrations now, in plan order, keeping at most `window`
    in flight (None: all of them; the cluster's engine still throttles)."""
    parsed = parse_entries(entries)
    pending = sorted(
        (entry for entry in parsed if entry.phase is DrainVMPhase.PENDING),
        key=lambda entry: entry.order or 0,
    )
    if window is not None:
        in_flight = sum(1 for entry in parsed if entry.in_flight)
        pending = pending[: max(0, window - in_flight)]
    return _documents(pending)


def progress_status(
    entries: Sequence[Mapping[str, Any]],
    current: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """Counts, progress, phase, times, ETA and conditions of a drain that is executing."""
    return documents.progress_status(parse_entries(entries), current, generation, now)
