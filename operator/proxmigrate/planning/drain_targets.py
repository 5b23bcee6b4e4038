"""Which target takes a guest of a drain: among the qualifying ones whose link can still take
its bytes in time, the one with the lowest load score (memory committed after the move, then
bytes to receive against its fair share, then CPU); and, for guests none can take, the
memory missing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.planning.capacity import TargetLedger, memory_need, move_cost
from proxmigrate.planning.drain_plan import UnplaceableCause, UnplaceableVM, unplaceable
from proxmigrate.planning.units import format_bytes

# Load score weights: memory dominates, received bytes keep links and target sshds balanced,
# CPU only separates otherwise close targets.
MEMORY_WEIGHT = 1.0
TRANSFER_WEIGHT = 0.5
CPU_WEIGHT = 0.25


def incoming_costs(inventory: Inventory, in_flight: Mapping[int, str]) -> Counter[str]:
    """Cost of the moves in flight still headed to each node (guests not there yet)."""
    incoming: Counter[str] = Counter()
    for vmid, target in in_flight.items():
        vm = inventory.vm(vmid)
        if vm is not None and vm.node != target:
            incoming[target] += move_cost(vm)
    return incoming


def conflict_free(
    vm: VMInfo, candidates: tuple[str, ...], ledgers: Mapping[str, TargetLedger]
) -> tuple[str, ...]:
    """The candidates holding no guest of an anti-affinity group of `vm`."""
    return tuple(name for name in candidates if ledgers[name].anti_affinity_conflict(vm) is None)


def choose_target(
    vm: VMInfo,
    candidates: tuple[str, ...],
    pinned: bool,
    ledgers: Mapping[str, TargetLedger],
    fair_shares: Mapping[str, float],
    budgets: Mapping[str, float],
    avoid: frozenset[str],
) -> str | UnplaceableVM:
    """The chosen target's name, or why there is none; an avoided target only as a last resort."""
    open_targets = [ledgers[name] for name in conflict_free(vm, candidates, ledgers)]
    fitting = [ledger for ledger in open_targets if ledger.fits(vm)]
    fitting = [ledger for ledger in fitting if ledger.name not in avoid] or fitting
    if fitting and pinned:
        return fitting[0].name
    if fitting:
        return _least_loaded(vm, fitting, fair_shares, budgets).name
    prefix = f"pinned to {', '.join(candidates)}: " if pinned else ""
    conflicts = [
        f"{name} holds anti-affinity {ledgers[name].anti_affinity_conflict(vm)}"
        for name in candidates
        if ledgers[name].anti_affinity_conflict(vm) is not None
    ]
    if not open_targets:
        return unplaceable(
            vm,
            UnplaceableCause.ANTI_AFFINITY,
            prefix + "anti-affinity conflict on every target: " + "; ".join(conflicts),
        )
    roomiest = min(open_targets, key=lambda ledger: (-ledger.free_memory, ledger.name))
    reason = (
        f"needs {format_bytes(memory_need(vm))}, largest free target {roomiest.name} "
        f"has {format_bytes(roomiest.free_memory)}"
    )
    if conflicts:
        reason += "; " + "; ".join(conflicts)
    return unplaceable(vm, UnplaceableCause.MEMORY, prefix + reason)


def missing_memory(
    short_of_memory: list[tuple[VMInfo, tuple[str, ...]]], ledgers: Mapping[str, TargetLedger]
) -> int:
    """Sum of shortfalls, each guest (largest first) put where the most memory is left.

    Each entry's candidates are its conflict-free targets, never empty for a memory shortfall.
    """
    left = {name: ledger.free_memory for name, ledger in ledgers.items()}
    missing = 0
    for vm, candidates in sorted(
        short_of_memory, key=lambda item: (-memory_need(item[0]), item[0].vmid)
    ):
        need = memory_need(vm)
        best = min(candidates, key=lambda name: (-left[name], name))
        missing += max(0, need - left[best])
        left[best] = max(0, left[best] - need)
    return missing


def _least_loaded(
    vm: VMInfo,
    fitting: list[TargetLedger],
    fair_shares: Mapping[str, float],
    budgets: Mapping[str, float],
) -> TargetLedger:
    """The fitting target with the lowest load score among those whose link budget
    (planning/links.py `link_budgets`) still holds `vm`'s bytes; when none does, the one
    where its bytes end soonest at the target's link (bytes over budget, budgets being in
    proportion to the links). Memory's pull towards roomy nodes thus never makes a slow
    link the drain's tail while another link has room: in drain-25g-into-5g it kept
    half-full pve4's 5 Gbit/s link under its share and put pve3's over it (bench/RESULTS.md,
    "Issue 13, fourteenth pass (plan)")."""
    cost = move_cost(vm)
    within = [ledger for ledger in fitting if ledger.incoming_cost + cost <= budgets[ledger.name]]
    if within:
        return min(
            within,
            key=lambda ledger: (_load_score(ledger, vm, fair_shares[ledger.name]), ledger.name),
        )
    return min(
        fitting,
        key=lambda ledger: (
            (ledger.incoming_cost + cost) / max(1.0, budgets[ledger.name]),
            _load_score(ledger, vm, fair_shares[ledger.name]),
            ledger.name,
        ),
    )


def _load_score(ledger: TargetLedger, vm: VMInfo, fair_share: float) -> float:
    node = ledger.node
    committed_ratio = 1.0 - (ledger.free_memory - memory_need(vm)) / max(1, node.max_memory)
    transfer_share = (ledger.incoming_cost + move_cost(vm)) / max(1.0, fair_share)
    cpu_ratio = (ledger.busy_cpus + vm.cpus) / max(1, node.max_cpu)
    return (
        MEMORY_WEIGHT * committed_ratio + TRANSFER_WEIGHT * transfer_share + CPU_WEIGHT * cpu_ratio
    )
