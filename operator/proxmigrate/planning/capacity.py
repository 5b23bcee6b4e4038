"""Memory headroom and per-target bookkeeping shared by drain and placement planning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxmigrate.inventory import NodeInfo, VMInfo
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.selection import anti_affinity_groups
from proxmigrate.planning.units import GIB, MIB


@dataclass(frozen=True)
class MemoryReserve:
    """Memory never planned on a target: the larger of `min_bytes` and `ratio` x its max memory.

    Default max(2 GiB, 10 %). A node's `mem` is a snapshot: resident guests may balloon up to
    their `maxmem`, QEMU needs memory beyond the guest's (device emulation, page tables), and
    the host's page cache, ZFS ARC and PVE daemons fluctuate. A ratio scales that margin with
    big hosts; the floor protects small ones, where a few hundred MiB of ratio would leave the
    host itself no room. Both are chosen values, not measured ones: set either to 0 to opt out.
    """

    min_bytes: int = 2 * GIB
    ratio: float = 0.10

    def __post_init__(self) -> None:
        if self.min_bytes < 0:
            raise PlanError(f"memory reserve must not be negative, got {self.min_bytes} bytes")
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"memory reserve ratio must be in [0, 1), got {self.ratio}")

    def for_node(self, node: NodeInfo) -> int:
        return max(self.min_bytes, int(node.max_memory * self.ratio))


def memory_need(vm: VMInfo) -> int:
    """Memory a guest claims on its target: its `maxmem`, running or not.

    A stopped guest reserves its full memory too: it is moved so it can be started there
    later, and a node that cannot start it is no target for it.
    """
    return vm.max_memory


def transfer_bytes(vm: VMInfo) -> int:
    """Bytes a move copies, at least: the guest's used RAM when running, nothing when stopped.

    A running guest reporting no usage is counted at `maxmem` (unknown, assume the worst).
    Local disk contents are not known to the inventory and are not counted.
    """
    if not vm.running:
        return 0
    return vm.used_memory or vm.max_memory


# A move costs fixed time besides its bytes: target `qm start` 1-4 s, tunnel about 1 s, end
# phase about 2 s (published PVE logs, docs/reference/proxmox.md#figures-and-measurements), so
# 4-7 s, which is 0.5-0.8 GiB at the 110-140 MiB/s of a secure stream on 1 GbE. Counting
# every move as at least this much keeps stopped guests (no bytes) from piling on one target.
MIN_MOVE_COST_BYTES = 512 * MIB


def move_cost(vm: VMInfo) -> int:
    """What moving `vm` costs a drain's links, in bytes: its transfer, at least the fixed cost."""
    return max(transfer_bytes(vm), MIN_MOVE_COST_BYTES)


class TargetLedger:
    """One candidate target while a plan is built: memory left, guests and groups it holds."""

    def __init__(
        self,
        node: NodeInfo,
        residents: Iterable[VMInfo],
        reserve: MemoryReserve,
        anti_affinity_prefix: str,
    ) -> None:
        self.node = node
        self.free_memory = max(0, node.max_memory - node.used_memory - reserve.for_node(node))
        self.busy_cpus = node.cpu_load * node.max_cpu
        self.incoming_cost = 0
        self._prefix = anti_affinity_prefix
        self._group_holders: dict[str, int] = {}
        for vm in sorted(residents, key=lambda resident: resident.vmid):
            self._hold_groups(vm)

    @property
    def name(self) -> str:
        return self.node.name

    def anti_affinity_conflict(self, vm: VMInfo) -> str | None:
        """`group db (vm 101)` when another guest of one of `vm`'s groups is already here."""
        for group in sorted(anti_affinity_groups(vm, self._prefix)):
            holder = self._group_holders.get(group)
            if holder is not None and holder != vm.vmid:
                return f"group {group} (vm {holder})"
        return None

    def fits(self, vm: VMInfo) -> bool:
        return memory_need(vm) <= self.free_memory

    def admit(self, vm: VMInfo, cost: int) -> None:
        """Book `vm` here: its memory, vCPUs, transfer cost and anti-affinity groups."""
        self.free_memory -= memory_need(vm)
        self.busy_cpus += vm.cpus
        self.incoming_cost += cost
        self._hold_groups(vm)

    def _hold_groups(self, vm: VMInfo) -> None:
        for group in anti_affinity_groups(vm, self._prefix):
            self._group_holders.setdefault(group, vm.vmid)
