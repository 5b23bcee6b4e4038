"""What a drain plan answers: each guest of the node moved (in order), skipped, or
unplaceable with why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxmigrate.inventory import VMInfo
from proxmigrate.planning.capacity import memory_need
from proxmigrate.planning.units import format_bytes


class UnplaceableCause(StrEnum):
    MEMORY = "memory"
    ANTI_AFFINITY = "anti-affinity"
    PIN = "pin"
    NO_TARGETS = "no-targets"
    LOCAL_DEVICES = "local-devices"
    LOCAL_DISKS = "local-disks"


@dataclass(frozen=True)
class PlannedMove:
    vmid: int
    name: str
    memory_bytes: int
    transfer_bytes: int
    source: str
    target: str
    order: int
    online: bool
    with_local_disks: bool


@dataclass(frozen=True)
class SkippedVM:
    vmid: int
    name: str
    reason: str


@dataclass(frozen=True)
class UnplaceableVM:
    vmid: int
    name: str
    memory_bytes: int
    reason: str
    cause: UnplaceableCause


@dataclass(frozen=True)
class DrainPlan:
    """Every guest on the node appears exactly once: in `moves`, `skipped` or `unplaceable`.

    `missing_memory_bytes` covers the guests unplaceable for memory only: placing each of them
    (largest first) on its candidate target with the most memory left, it is the sum of the
    shortfalls, i.e. memory to add or free on those targets so the plan fits.
    """

    node: str
    targets: tuple[str, ...]
    excluded_targets: tuple[tuple[str, str], ...]
    moves: tuple[PlannedMove, ...]
    skipped: tuple[SkippedVM, ...]
    unplaceable: tuple[UnplaceableVM, ...]
    missing_memory_bytes: int

    @property
    def complete(self) -> bool:
        return not self.unplaceable

    @property
    def total_transfer_bytes(self) -> int:
        return sum(move.transfer_bytes for move in self.moves)

    def transfer_bytes_by_target(self) -> dict[str, int]:
        totals = dict.fromkeys(self.targets, 0)
        for move in self.moves:
            totals[move.target] += move.transfer_bytes
        return totals

    def blocked_message(self) -> str:
        """One line for a `Blocked` condition; empty when the plan is complete."""
        if self.complete:
            return ""
        total = len(self.moves) + len(self.unplaceable)
        head = f"cannot place {len(self.unplaceable)} of {total} VMs"
        if self.missing_memory_bytes:
            head += f" ({format_bytes(self.missing_memory_bytes)} of memory missing)"
        details = "; ".join(f"{vm.vmid} ({vm.name}): {vm.reason}" for vm in self.unplaceable)
        return f"{head}: {details}"


def unplaceable(vm: VMInfo, cause: UnplaceableCause, reason: str) -> UnplaceableVM:
    """`vm` reported unplaceable, with the memory it would have needed."""
    return UnplaceableVM(vm.vmid, vm.name, memory_need(vm), reason, cause)
