"""One guest of a NodeDrain (`status.vms[]`), typed: parsed once from its document.

`status.vms` is the drain's durable state: one entry per guest, written when the plan is
accepted, then advanced from what each guest's VMMigration reports (runtime/
drain_progress.py); with returnGuests, its way home too (status/drain_return.py). An entry
is parsed once from its document (`DrainEntry.parse`) and written back with `document()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.enums import DrainReturnPhase, DrainVMPhase
from proxmigrate.planning import DrainPlan

FINAL_VM_PHASES = frozenset(
    {DrainVMPhase.MIGRATED, DrainVMPhase.FAILED, DrainVMPhase.SKIPPED, DrainVMPhase.CANCELLED}
)
IN_FLIGHT_VM_PHASES = frozenset({DrainVMPhase.QUEUED, DrainVMPhase.MIGRATING})
UNPLACEABLE = "unplaceable: "  # prefix of the reason of a guest no node could take


@dataclass(frozen=True)
class DrainEntry:
    """One guest of a drain (`NodeDrain.status.vms[]`)."""

    vmid: int
    phase: DrainVMPhase
    source: str  # `from`: the drained node
    name: str | None = None
    memory_bytes: int | None = None
    target: str | None = None  # `to`: the planned (or actual) target
    order: int | None = None  # plan position, from 1; None for guests not moved
    migration: str | None = None  # the VMMigration's name, once handed over
    reason: str | None = None
    return_phase: DrainReturnPhase | None = None  # once maintenanceDone planned its return
    return_migration: str | None = None  # the VMMigration that moves it home
    return_reason: str | None = None  # why it stays (ReturnSkipped) or its return failed

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> DrainEntry:
        memory = document.get("memoryBytes")
        order = document.get("order")
        return_phase = document.get("returnPhase")
        return cls(
            vmid=int(document["vmid"]),
            phase=DrainVMPhase(document["phase"]),
            source=str(document.get("from") or ""),
            name=document.get("name"),
            memory_bytes=None if memory is None else int(memory),
            target=document.get("to") or None,
            order=None if order is None else int(order),
            migration=document.get("migration") or None,
            reason=document.get("reason") or None,
            return_phase=None if return_phase is None else DrainReturnPhase(return_phase),
            return_migration=document.get("returnMigration") or None,
            return_reason=document.get("returnReason") or None,
        )

    def document(self) -> dict[str, Any]:
        fields = {
            "vmid": self.vmid,
            "name": self.name,
            "memoryBytes": self.memory_bytes,
            "from": self.source,
            "to": self.target,
            "order": self.order,
            "phase": self.phase.value,
            "migration": self.migration,
            "reason": self.reason,
            "returnPhase": None if self.return_phase is None else self.return_phase.value,
            "returnMigration": self.return_migration,
            "returnReason": self.return_reason,
        }
        return {key: value for key, value in fields.items() if value is not None}

    def but(self, **changes: Any) -> DrainEntry:
        return dataclasses.replace(self, **changes)

    @property
    def final(self) -> bool:
        return self.phase in FINAL_VM_PHASES

    @property
    def in_flight(self) -> bool:
        return self.phase in IN_FLIGHT_VM_PHASES

    @property
    def failed(self) -> bool:
        return self.phase in (DrainVMPhase.FAILED, DrainVMPhase.CANCELLED)

    @property
    def unplaceable(self) -> bool:
        return (self.reason or "").startswith(UNPLACEABLE)


def parse_entries(documents: Sequence[Mapping[str, Any]]) -> list[DrainEntry]:
    return [DrainEntry.parse(document) for document in documents]


def plan_entries(plan: DrainPlan) -> list[DrainEntry]:
    """The entries of a plan: moves Pending in order, then skipped and unplaceable guests
    (Skipped with their reason; a drain only starts with unplaceable ones under allowPartial)."""
    pending = DrainVMPhase.PENDING
    skipped = DrainVMPhase.SKIPPED
    entries = [
        DrainEntry(m.vmid, pending, m.source, m.name, m.memory_bytes, m.target, m.order + 1)
        for m in plan.moves
    ]
    entries += [
        DrainEntry(vm.vmid, skipped, plan.node, vm.name, reason=vm.reason) for vm in plan.skipped
    ]
    entries += [
        DrainEntry(
            vm.vmid, skipped, plan.node, vm.name, vm.memory_bytes, reason=UNPLACEABLE + vm.reason
        )
        for vm in plan.unplaceable
    ]
    return entries
