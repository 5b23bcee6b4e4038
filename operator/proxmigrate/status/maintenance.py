"""A NodeMaintenance's status documents (pure): its plan, each node's entry as its NodeDrain
shows it, and the phase, counts and conditions derived from the entries, so a restarted
operator rebuilds everything from the API server alone."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from proxmigrate.api.conditions import ConditionType, set_condition, set_degraded, set_kstatus
from proxmigrate.api.enums import DrainPhase, MaintenanceNodePhase, MaintenancePhase
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.inventory import Inventory
from proxmigrate.planning.rolling import RollingPlan, RollingStep

NodePhase = MaintenanceNodePhase
# What a node's NodeDrain phase means for the node
_NODE_PHASE_OF_DRAIN = {
    DrainPhase.PENDING: NodePhase.DRAINING,
    DrainPhase.PLANNING: NodePhase.DRAINING,
    DrainPhase.DRAINING: NodePhase.DRAINING,
    DrainPhase.DRAINED: NodePhase.IN_MAINTENANCE,
    DrainPhase.RETURNING: NodePhase.RETURNING,
    DrainPhase.RETURNED: NodePhase.DONE,
    DrainPhase.BLOCKED: NodePhase.BLOCKED,
    DrainPhase.FAILED: NodePhase.FAILED,
    DrainPhase.CANCELLED: NodePhase.FAILED,
}
# The least advanced phase names the step (the STEP column)
_STEP_ORDER = (NodePhase.BLOCKED, NodePhase.DRAINING, NodePhase.IN_MAINTENANCE, NodePhase.RETURNING)


def _step_document(step: RollingStep, number: int) -> dict[str, Any]:
    targets = Counter(move.target for plan in step.drains for move in plan.moves)
    return {
        "step": number,
        "nodes": list(step.nodes),
        "moves": sum(len(plan.moves) for plan in step.drains),
        "returns": len(step.returns.moves),
        "returnSkipped": len(step.returns.skipped),
        "bytes": sum(move.transfer_bytes for move in step.moves),
        "parked": len(step.parked_on_later),
        "blocked": step.blocked_message(),
        "targets": ", ".join(f"{node} {n}" for node, n in sorted(targets.items())),
    }


def plan_document(plan: RollingPlan, first_step: int, now: datetime.datetime) -> dict[str, Any]:
    """`status.plan`: the steps still to run, numbered from `first_step`."""
    return {
        "generatedTime": to_rfc3339(now),
        "steps": [_step_document(step, first_step + i) for i, step in enumerate(plan.steps)],
    }


@dataclass(frozen=True)
class NodeEntry:
    """One `status.nodes[]` entry."""

    name: str
    phase: NodePhase = NodePhase.PENDING
    step: int = 0
    drain: str | None = None
    migrated: int = 0
    returned: int = 0
    message: str = ""
    start_time: str | None = None
    maintenance_time: str | None = None
    completion_time: str | None = None

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> NodeEntry:
        return cls(
            name=str(document["name"]),
            phase=NodePhase(document.get("phase") or NodePhase.PENDING),
            step=int(document.get("step") or 0),
            drain=document.get("drain"),
            migrated=int(document.get("migrated") or 0),
            returned=int(document.get("returned") or 0),
            message=str(document.get("message") or ""),
            start_time=document.get("startTime"),
            maintenance_time=document.get("maintenanceTime"),
            completion_time=document.get("completionTime"),
        )

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "phase": self.phase.value,
            "step": self.step,
            "migrated": self.migrated,
            "returned": self.returned,
            "message": self.message,
        }
        optional = {
            "drain": self.drain,
            "startTime": self.start_time,
            "maintenanceTime": self.maintenance_time,
            "completionTime": self.completion_time,
        }
        return document | {key: value for key, value in optional.items() if value is not None}

    def moved_to(self, phase: NodePhase, message: str, now: datetime.datetime) -> NodeEntry:
        """The entry in `phase`, with the times of the phases it reached."""
        stamp = to_rfc3339(now)
        entry = replace(self, phase=phase, message=message)
        if phase is NodePhase.IN_MAINTENANCE and entry.maintenance_time is None:
            entry = replace(entry, maintenance_time=stamp)
        if phase.is_final and entry.completion_time is None:
            entry = replace(entry, completion_time=stamp)
        return entry


def node_entries(nodes: Sequence[str], documents: Sequence[Mapping[str, Any]]) -> list[NodeEntry]:
    """One entry per node of the spec, in its order, from `status.nodes` where recorded."""
    recorded = {str(d.get("name")): NodeEntry.parse(d) for d in documents if d.get("name")}
    return [recorded.get(node, NodeEntry(node)) for node in nodes]


def _ready_message(drain: Mapping[str, Any]) -> str:
    conditions = (drain.get("status") or {}).get("conditions") or []
    ready: Mapping[str, Any] = next(
        (c for c in conditions if c.get("type") == ConditionType.READY), {}
    )
    return str(ready.get("message") or "")


def observe(entry: NodeEntry, drain: Mapping[str, Any] | None, now: datetime.datetime) -> NodeEntry:
    """`entry` as its NodeDrain (None: none exists) shows it now. Final entries stay."""
    if entry.phase.is_final:
        return entry
    if drain is None:
        if entry.phase is NodePhase.PENDING:
            return entry
        message = f"NodeDrain {entry.drain} was deleted before the node's maintenance was done"
        return entry.moved_to(NodePhase.FAILED, message, now)
    status = drain.get("status") or {}
    try:
        drain_phase = DrainPhase(status.get("phase") or DrainPhase.PENDING)
    except ValueError:
        drain_phase = DrainPhase.PENDING
    phase = _NODE_PHASE_OF_DRAIN[drain_phase]
    spec = drain.get("spec") or {}
    if phase is NodePhase.IN_MAINTENANCE and spec.get("maintenanceDone"):
        phase = NodePhase.RETURNING  # the drain's controller has not seen it yet
    entry = replace(
        entry,
        drain=drain["metadata"]["name"],
        migrated=int(status.get("migrated") or 0),
        returned=int(status.get("returned") or 0),
    )
    message = _ready_message(drain) if phase in (NodePhase.BLOCKED, NodePhase.FAILED) else ""
    return entry.moved_to(phase, message, now)


@dataclass(frozen=True)
class Verdict:
    """The maintenance's phase with the reason and message of its conditions."""

    phase: MaintenancePhase
    reason: str
    message: str
    degraded: bool = False


def summary(entries: Sequence[NodeEntry]) -> str:
    phases = Counter(entry.phase for entry in entries)
    done = phases[NodePhase.DONE]
    text = f"{done} of {len(entries)} nodes done"
    for phase in (NodePhase.FAILED, NodePhase.SKIPPED, NodePhase.BLOCKED):
        if phases[phase]:
            text += f", {phases[phase]} {phase.value.lower()}"
    return text


def current_step(entries: Sequence[NodeEntry]) -> list[NodeEntry]:
    """The nodes of the step under way: those with a drain still running, waiting or
    returning, or blocked."""
    return [e for e in entries if e.phase.is_active or e.phase is NodePhase.BLOCKED]


def step_phase(entries: Sequence[NodeEntry]) -> str | None:
    phases = {entry.phase for entry in current_step(entries)}
    return next((phase.value for phase in _STEP_ORDER if phase in phases), None)


def maintenance_status(
    entries: Sequence[NodeEntry],
    verdict: Verdict,
    current: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The whole status but the plan: node entries, counts, the current step, conditions."""
    step = current_step(entries)
    phase = verdict.phase
    final = phase in (MaintenancePhase.SUCCEEDED, MaintenancePhase.FAILED)
    started = current.get("startTime")
    if started is None and any(entry.drain for entry in entries):
        started = to_rfc3339(now)
    status: dict[str, Any] = {
        "phase": phase.value,
        "observedGeneration": generation,
        "nodes": [entry.document() for entry in entries],
        "step": max((entry.step for entry in entries), default=0),
        "currentNodes": ",".join(entry.name for entry in step) or None,
        "stepPhase": step_phase(entries),
        "done": sum(1 for entry in entries if entry.phase.is_final),
        "total": len(entries),
        "migrated": sum(entry.migrated + entry.returned for entry in entries),
        "startTime": started,
        "completionTime": (current.get("completionTime") or to_rfc3339(now)) if final else None,
    }
    conditions = current.get("conditions")
    conditions = set_condition(
        conditions,
        ConditionType.READY,
        phase is MaintenancePhase.SUCCEEDED,
        verdict.reason,
        verdict.message,
        generation,
        now,
    )
    running = phase is MaintenancePhase.RUNNING
    conditions = set_condition(
        conditions,
        ConditionType.PROGRESSING,
        running,
        verdict.reason,
        verdict.message,
        generation,
        now,
    )
    stalled = phase in (MaintenancePhase.FAILED, MaintenancePhase.BLOCKED)
    conditions = set_kstatus(
        conditions, running, stalled, verdict.reason, verdict.message, generation, now
    )
    degraded = verdict.degraded or stalled
    status["conditions"] = set_degraded(
        conditions, degraded, verdict.reason, verdict.message, generation, now
    )
    return status


def ended(entries: list[NodeEntry]) -> Verdict:
    """The verdict of a maintenance with no node left to do."""
    text = summary(entries)
    if any(e.phase in (NodePhase.FAILED, NodePhase.SKIPPED) for e in entries):
        return Verdict(MaintenancePhase.FAILED, "NodesNotDone", text, degraded=True)
    return Verdict(MaintenancePhase.SUCCEEDED, "Succeeded", text)


def skip_unusable(
    entries: list[NodeEntry], pending: tuple[str, ...], inventory: Inventory, now: datetime.datetime
) -> tuple[str, ...]:
    """With onFailure continue, pending nodes that are not in the cluster or offline are
    Skipped (in place in `entries`) instead of blocking the plan; the others stay pending."""
    kept = []
    for index, entry in enumerate(entries):
        if entry.name not in pending:
            continue
        node = inventory.node(entry.name)
        if node is not None and node.online:
            kept.append(entry.name)
            continue
        reason = "not in the cluster" if node is None else "offline when its step came"
        entries[index] = entry.moved_to(NodePhase.SKIPPED, reason, now)
    return tuple(kept)
