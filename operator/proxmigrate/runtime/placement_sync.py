"""A VMPlacement's status from the planner's decisions and its VMMigrations (pure).

The controller decides which guests to move (enforce, no migration in flight, flap guard
allows); this module turns the outcome into the status the CRD defines: per-guest entries,
the summary columns, the flap-guard history and the conditions.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition, set_degraded
from proxmigrate.api.enums import PlacementPolicy
from proxmigrate.api.timestamps import parse_rfc3339, to_rfc3339
from proxmigrate.planning import PlacementAction, PlacementDecision

MIXED = "mixed"


@dataclass(frozen=True)
class SyncOutcome:
    """What one sync did beyond the decisions: migrations in flight by vmid (their names),
    migrations created now, and guests the flap guard held back."""

    in_flight: Mapping[int, str] = field(default_factory=dict)
    created: Sequence[Mapping[str, Any]] = ()  # lastMigration-shaped entries
    flapped: Sequence[int] = ()


def recent_migrations(
    current: Mapping[str, Any], window_seconds: float, now: datetime.datetime
) -> list[dict[str, Any]]:
    """status.recentMigrations still inside the flap-guard window."""
    return [
        dict(entry)
        for entry in current.get("recentMigrations") or []
        if (now - parse_rfc3339(entry["time"])).total_seconds() < window_seconds
    ]


def migration_times(recent: Sequence[Mapping[str, Any]], vmid: int) -> list[float]:
    """Epoch seconds of the recent migrations of one guest, for the flap guard."""
    return [parse_rfc3339(e["time"]).timestamp() for e in recent if int(e["vmid"]) == vmid]


def describe_vms(decisions: Sequence[PlacementDecision]) -> str:
    if len(decisions) == 1:
        return f"{decisions[0].vmid} ({decisions[0].name})"
    return f"{len(decisions)} VMs"


def _single(values: Sequence[str | None]) -> str | None:
    present = {value for value in values if value}
    if not present:
        return None
    return present.pop() if len(present) == 1 else MIXED


def sync_status(
    decisions: Sequence[PlacementDecision],
    policy: PlacementPolicy,
    outcome: SyncOutcome,
    current: Mapping[str, Any],
    child_phases: Mapping[str, str],
    window_seconds: float,
    generation: int | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """Full status after a successful sync; `child_phases` maps VMMigration names to phases."""
    recent = recent_migrations(current, window_seconds, now)
    recent += [{"vmid": entry["vmid"], "time": entry["time"]} for entry in outcome.created]
    last = (
        dict(outcome.created[-1]) if outcome.created else dict(current.get("lastMigration") or {})
    )
    if last.get("name") in child_phases:
        last["phase"] = child_phases[last["name"]]
    out_of_sync = [d for d in decisions if not d.in_sync]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "vm": describe_vms(decisions),
        "desiredNode": _single([d.desired_node for d in decisions]),
        "currentNode": _single([d.current_node for d in decisions]),
        "inSync": not out_of_sync,
        "matchedVMs": len(decisions),
        "outOfSyncVMs": len(out_of_sync),
        "vms": [_vm_entry(d, outcome.in_flight) for d in decisions],
        "lastMigration": last or None,
        "recentMigrations": recent,
        "lastSyncTime": to_rfc3339(now),
    }
    status["conditions"] = _conditions(decisions, policy, outcome, current, last, generation, now)
    return status


def _vm_entry(decision: PlacementDecision, in_flight: Mapping[int, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "vmid": decision.vmid,
        "name": decision.name,
        "currentNode": decision.current_node,
        "inSync": decision.in_sync,
    }
    if decision.desired_node:
        entry["desiredNode"] = decision.desired_node
    if decision.vmid in in_flight:
        entry["migration"] = in_flight[decision.vmid]
    return entry


def _conditions(
    decisions: Sequence[PlacementDecision],
    policy: PlacementPolicy,
    outcome: SyncOutcome,
    current: Mapping[str, Any],
    last: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    conditions = set_condition(
        current.get("conditions"),
        ConditionType.READY,
        True,
        "Resolved",
        f"{describe_vms(decisions)} matched",
        generation,
        now,
    )
    moves = [d for d in decisions if d.action is PlacementAction.MOVE]
    blocked = [d for d in decisions if d.action is PlacementAction.BLOCKED]
    if not moves and not blocked:
        in_sync = (True, "InSync", "every matched VM runs on its desired node")
    elif moves and policy is PlacementPolicy.REPORT:
        drift = "; ".join(f"{d.vmid} on {d.current_node}, desired {d.desired_node}" for d in moves)
        in_sync = (False, "Drift", f"policy report, not moving: {drift}")
    elif moves:
        drift = "; ".join(f"{d.vmid}: {d.current_node} -> {d.desired_node}" for d in moves)
        in_sync = (False, "Migrating", f"moving back: {drift}")
    else:
        in_sync = (False, "Blocked", f"{len(blocked)} VMs cannot be placed (see Blocked)")
    conditions = set_condition(conditions, ConditionType.IN_SYNC, *in_sync, generation, now)
    if blocked:
        cordoned = any("cordoned" in d.reason for d in blocked)
        details = "; ".join(f"{d.vmid}: {d.reason}" for d in blocked)
        reason = "NodeCordoned" if cordoned else "NoUsableNode"
        conditions = set_condition(
            conditions, ConditionType.BLOCKED, True, reason, f"waiting: {details}", generation, now
        )
    else:
        conditions = set_condition(
            conditions, ConditionType.BLOCKED, False, "NotBlocked", "nothing waits", generation, now
        )
    if outcome.flapped:
        vmids = ", ".join(str(vmid) for vmid in outcome.flapped)
        degraded = (
            True,
            "FlapGuard",
            f"VMs {vmids} were migrated too often within the flap-guard window; not moving "
            "them again until older migrations leave the window (is something else moving "
            "them, e.g. PVE HA or a rebalancer?)",
        )
    elif last.get("phase") == "Failed":
        degraded = (True, "MigrationFailed", f"VMMigration {last.get('name')} failed")
    else:
        degraded = (False, "AsExpected", "nothing wrong")
    return set_condition(conditions, ConditionType.DEGRADED, *degraded, generation, now)


def invalid_status(
    current: Mapping[str, Any],
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
    *,
    degraded: bool,
) -> dict[str, Any]:
    """Status when the placement cannot be evaluated (bad spec or selection, no cluster)."""
    conditions = set_condition(
        current.get("conditions"), ConditionType.READY, False, reason, message, generation, now
    )
    conditions = set_condition(
        conditions, ConditionType.IN_SYNC, None, reason, message, generation, now
    )
    conditions = set_degraded(conditions, degraded, reason, message, generation, now)
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        "inSync": None,
        "matchedVMs": 0,
        "outOfSyncVMs": 0,
        "vms": [],
        "vm": None,
        "desiredNode": None,
        "currentNode": None,
        "lastSyncTime": to_rfc3339(now),
    }
