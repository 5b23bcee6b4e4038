"""Drain planning: where each guest of a node goes, and in which order it leaves.

Heuristic (greedy, deterministic):
1. Triage every guest on the node: skipped by selector or policy, unplaceable by nature
   (local devices, local disks under `fail`), or to place.
2. Place the most constrained first (pinned, then anti-affinity members), larger memory
   first within each: first-fit-decreasing keeps big guests from being squeezed out.
   A target qualifies when the guest fits its usable memory (max - used - reserve - what
   this plan and the cluster's moves in flight already put there) and holds no guest of
   the same anti-affinity group.
   Pinned guests take the first qualifying node in their preference order; the others take
   the qualifying target with the lowest load score (memory committed after the move, then
   bytes to receive, in flight included, against its fair share, then CPU), ties by name.
   A target's fair share of the bytes is weighted by the link it takes them in on where
   links are declared (`DrainRequest.link_gbps`, planning/links.py), else even.
3. Order: each target's guests alternate largest and smallest (largest, smallest, 2nd
   largest, 2nd smallest, ...), interleaved by always drawing from the target with the
   fewest bytes scheduled so far for its link (bytes over its weight). Parallel moves then
   hit distinct targets (no single link or sshd carries the start of the drain) and every
   target finishes at about the same time. Pure largest-first would leave only small guests
   for the end, whose fixed cost per migration (qm start, tunnel, cleanup: 4-7 s,
   docs/reference/proxmox.md #figures-and-measurements) then runs with the link idle;
   alternating lets small guests pass their fixed cost while large ones fill the link
   (bench/RESULTS.md: 1.23x -> 1.13x of the bandwidth bound at 8 parallel).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning.capacity import MemoryReserve, TargetLedger, memory_need, transfer_bytes
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.links import ingress_weights
from proxmigrate.planning.projection import with_pending_moves
from proxmigrate.planning.selection import (
    DEFAULT_ANTI_AFFINITY_PREFIX,
    VMSelector,
    anti_affinity_groups,
)
from proxmigrate.planning.units import MIB, format_bytes


class StoppedVMsPolicy(StrEnum):
    """`NodeDrain.spec.stoppedVMs`."""

    MIGRATE = "migrate"
    LEAVE = "leave"


class TemplatesPolicy(StrEnum):
    """`NodeDrain.spec.templates`."""

    MIGRATE = "migrate"
    LEAVE = "leave"


class LocalDisksPolicy(StrEnum):
    """`NodeDrain.spec.localDisks`."""

    MIGRATE = "migrate"
    SKIP = "skip"
    FAIL = "fail"


# Load score weights: memory dominates, received bytes keep links and target sshds balanced,
# CPU only separates otherwise close targets.
MEMORY_WEIGHT = 1.0
TRANSFER_WEIGHT = 0.5
CPU_WEIGHT = 0.25

# A move costs fixed time besides its bytes: target `qm start` 1-4 s, tunnel about 1 s, end
# phase about 2 s (published PVE logs, docs/reference/proxmox.md#figures-and-measurements), so
# 4-7 s, which is 0.5-0.8 GiB at the 110-140 MiB/s of a secure stream on 1 GbE. Counting
# every move as at least this much keeps stopped guests (no bytes) from piling on one target.
MIN_MOVE_COST_BYTES = 512 * MIB


class UnplaceableCause(StrEnum):
    MEMORY = "memory"
    ANTI_AFFINITY = "anti-affinity"
    PIN = "pin"
    NO_TARGETS = "no-targets"
    LOCAL_DEVICES = "local-devices"
    LOCAL_DISKS = "local-disks"


@dataclass(frozen=True)
class DrainRequest:
    """What a NodeDrain asks for, already parsed from its spec.

    `targets` None means every other online node that is not cordoned; `cordoned` holds every
    node under a NodeDrain (the drained node may be in it). `pins` maps a vmid to the nodes a
    VMPlacement allows, in preference order. `local_disks` defaults to `skip`, as the CRD
    does: copying disks can take far longer than a maintenance window and local disks are
    often deliberate pinning, so such a guest stays on the node, reported with its reason.
    """

    node: str
    targets: tuple[str, ...] | None = None
    cordoned: frozenset[str] = frozenset()
    selector: VMSelector = field(default_factory=VMSelector)
    stopped_vms: StoppedVMsPolicy = StoppedVMsPolicy.MIGRATE
    templates: TemplatesPolicy = TemplatesPolicy.MIGRATE
    local_disks: LocalDisksPolicy = LocalDisksPolicy.SKIP
    reserve: MemoryReserve = field(default_factory=MemoryReserve)
    anti_affinity_prefix: str = DEFAULT_ANTI_AFFINITY_PREFIX
    pins: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    # One plan per cluster: every move of the cluster not yet final (vmid -> target: other
    # drains' planned and running moves, placements', by hand). Each counts as done on its
    # target's memory and as bytes still headed there in its load score, so concurrent
    # drains neither offer the same free memory twice nor send their tails to the same
    # roomy target (whose ingress would then be the common bottleneck). Moves onto the
    # drained or a cordoned node are left out: queued ones are withdrawn
    # (controllers/children.py withdraw_onto), running ones are planned once they land.
    in_flight: Mapping[int, str] = field(default_factory=dict)
    # Targets taken only when no other fits: nodes a rolling maintenance drains later, where
    # a guest parked now would have to move again (planning/rolling.py).
    avoid: frozenset[str] = frozenset()
    # Declared link speeds (node -> Gbit/s: ProxmoxCluster `nodeLinks`): each target's fair
    # share of the bytes follows what its link takes in (planning/links.py); unlisted
    # targets weigh as an average listed one, and with none listed every share is even.
    link_gbps: Mapping[str, float] = field(default_factory=dict)


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


def plan_drain(inventory: Inventory, request: DrainRequest) -> DrainPlan:
    """Plan the drain of `request.node`; raises PlanError for a request that names bad nodes."""
    _check_source(inventory, request.node)
    targets, excluded = _eligible_targets(inventory, request)
    in_flight = {
        vmid: target
        for vmid, target in request.in_flight.items()
        if target != request.node and target not in request.cordoned
    }
    incoming = _incoming_costs(inventory, in_flight)
    inventory = with_pending_moves(inventory, in_flight)
    ledgers = {
        name: TargetLedger(
            _node(inventory, name),
            inventory.vms_on(name),
            request.reserve,
            request.anti_affinity_prefix,
        )
        for name in targets
    }
    skipped: list[SkippedVM] = []
    unplaceable: list[UnplaceableVM] = []
    to_place: list[VMInfo] = []
    for vm in sorted(inventory.vms_on(request.node), key=lambda guest: guest.vmid):
        verdict = _triage(vm, request)
        if isinstance(verdict, SkippedVM):
            skipped.append(verdict)
        elif isinstance(verdict, UnplaceableVM):
            unplaceable.append(verdict)
        else:
            to_place.append(vm)

    for name, ledger in ledgers.items():
        ledger.incoming_cost = incoming[name]
    elsewhere = sum(ledger.incoming_cost for ledger in ledgers.values())
    weights = ingress_weights(request.node, targets, request.link_gbps)
    total_cost = sum(_move_cost(vm) for vm in to_place) + elsewhere
    total_weight = sum(weights.values()) or 1.0
    fair_shares = {name: total_cost * weights[name] / total_weight for name in targets}
    placed: list[tuple[VMInfo, str]] = []
    short_of_memory: list[tuple[VMInfo, tuple[str, ...]]] = []
    for vm in sorted(to_place, key=lambda guest: _placement_priority(guest, request)):
        refused = tuple(
            (name, f"refused by PVE ({why})")
            for name in targets
            if (why := vm.target_refusal(name)) is not None
        )
        usable = tuple(name for name in targets if vm.target_refusal(name) is None)
        candidates = _candidates(vm, request, usable)
        if not candidates:
            unplaceable.append(_no_candidate(vm, request, excluded + refused))
            continue
        outcome = _place(
            vm, candidates, vm.vmid in request.pins, ledgers, fair_shares, request.avoid
        )
        if isinstance(outcome, str):
            ledgers[outcome].admit(vm, _move_cost(vm))
            placed.append((vm, outcome))
            continue
        if outcome.cause is UnplaceableCause.MEMORY:
            short_of_memory.append((vm, _conflict_free(vm, candidates, ledgers)))
        unplaceable.append(outcome)

    return DrainPlan(
        node=request.node,
        targets=targets,
        excluded_targets=excluded,
        moves=_ordered_moves(placed, request, weights),
        skipped=tuple(skipped),
        unplaceable=tuple(sorted(unplaceable, key=lambda vm: vm.vmid)),
        missing_memory_bytes=_missing_memory(short_of_memory, ledgers),
    )


def _node(inventory: Inventory, name: str) -> NodeInfo:
    node = inventory.node(name)
    if node is None:
        known = ", ".join(sorted(n.name for n in inventory.nodes)) or "none"
        raise PlanError(f"node {name!r} is not in the cluster (nodes: {known})")
    return node


def _check_source(inventory: Inventory, name: str) -> None:
    if not _node(inventory, name).online:
        raise PlanError(
            f"node {name!r} is offline: PVE cannot migrate guests off a node that is down"
        )


def _eligible_targets(
    inventory: Inventory, request: DrainRequest
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Targets to use, and the named ones left out with why (offline or cordoned)."""
    if request.targets is None:
        names = sorted(n.name for n in inventory.nodes if n.name != request.node)
    else:
        if request.node in request.targets:
            raise PlanError(f"targets include {request.node!r}, the node being drained")
        names = sorted({_node(inventory, name).name for name in request.targets})
    eligible: list[str] = []
    excluded: list[tuple[str, str]] = []
    for name in names:
        if not _node(inventory, name).online:
            excluded.append((name, "offline"))
        elif name in request.cordoned:
            excluded.append((name, "cordoned by a NodeDrain"))
        else:
            eligible.append(name)
    return tuple(eligible), tuple(excluded)


def _triage(vm: VMInfo, request: DrainRequest) -> SkippedVM | UnplaceableVM | None:
    """Skip or refuse a guest before looking for a target; None means place it."""
    rejection = request.selector.rejection(vm)
    if rejection is not None:
        return SkippedVM(vm.vmid, vm.name, rejection)
    if vm.template and request.templates == TemplatesPolicy.LEAVE:
        return SkippedVM(vm.vmid, vm.name, "template (templates: leave)")
    if not vm.running and not vm.template and request.stopped_vms == StoppedVMsPolicy.LEAVE:
        return SkippedVM(vm.vmid, vm.name, "stopped (stoppedVMs: leave)")
    if vm.local_devices:
        devices = ", ".join(vm.local_devices)
        return _unplaceable(
            vm, UnplaceableCause.LOCAL_DEVICES, f"uses local devices ({devices}): PVE refuses"
        )
    if vm.local_disks and request.local_disks != LocalDisksPolicy.MIGRATE:
        disks = ", ".join(vm.local_disks)
        if request.local_disks == LocalDisksPolicy.SKIP:
            return SkippedVM(vm.vmid, vm.name, f"has local disks ({disks}) (localDisks: skip)")
        return _unplaceable(
            vm,
            UnplaceableCause.LOCAL_DISKS,
            f"has local disks ({disks}); localDisks is fail: set migrate or skip",
        )
    return None


def _unplaceable(vm: VMInfo, cause: UnplaceableCause, reason: str) -> UnplaceableVM:
    return UnplaceableVM(vm.vmid, vm.name, memory_need(vm), reason, cause)


def _placement_priority(vm: VMInfo, request: DrainRequest) -> tuple[bool, bool, int, int]:
    """Most constrained first: pinned, then anti-affinity members, then larger memory."""
    pinned = vm.vmid in request.pins
    grouped = bool(anti_affinity_groups(vm, request.anti_affinity_prefix))
    return (not pinned, not grouped, -memory_need(vm), vm.vmid)


def _candidates(vm: VMInfo, request: DrainRequest, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Targets `vm` may use: a pin's allowed nodes in its order, else every eligible target."""
    pin = request.pins.get(vm.vmid)
    if pin is None:
        return targets
    return tuple(dict.fromkeys(name for name in pin if name in targets))


def _move_cost(vm: VMInfo) -> int:
    return max(transfer_bytes(vm), MIN_MOVE_COST_BYTES)


def _incoming_costs(inventory: Inventory, in_flight: Mapping[int, str]) -> Counter[str]:
    """Cost of the moves in flight still headed to each node (guests not there yet)."""
    incoming: Counter[str] = Counter()
    for vmid, target in in_flight.items():
        vm = inventory.vm(vmid)
        if vm is not None and vm.node != target:
            incoming[target] += _move_cost(vm)
    return incoming


def _load_score(ledger: TargetLedger, vm: VMInfo, fair_share: float) -> float:
    node = ledger.node
    committed_ratio = 1.0 - (ledger.free_memory - memory_need(vm)) / max(1, node.max_memory)
    transfer_share = (ledger.incoming_cost + _move_cost(vm)) / max(1.0, fair_share)
    cpu_ratio = (ledger.busy_cpus + vm.cpus) / max(1, node.max_cpu)
    return (
        MEMORY_WEIGHT * committed_ratio + TRANSFER_WEIGHT * transfer_share + CPU_WEIGHT * cpu_ratio
    )


def _conflict_free(
    vm: VMInfo, candidates: tuple[str, ...], ledgers: Mapping[str, TargetLedger]
) -> tuple[str, ...]:
    return tuple(name for name in candidates if ledgers[name].anti_affinity_conflict(vm) is None)


def _place(
    vm: VMInfo,
    candidates: tuple[str, ...],
    pinned: bool,
    ledgers: Mapping[str, TargetLedger],
    fair_shares: Mapping[str, float],
    avoid: frozenset[str],
) -> str | UnplaceableVM:
    """The chosen target's name, or why there is none; an avoided target only as a last resort."""
    open_targets = [ledgers[name] for name in _conflict_free(vm, candidates, ledgers)]
    fitting = [ledger for ledger in open_targets if ledger.fits(vm)]
    fitting = [ledger for ledger in fitting if ledger.name not in avoid] or fitting
    if fitting and pinned:
        return fitting[0].name
    if fitting:
        return min(
            fitting,
            key=lambda ledger: (_load_score(ledger, vm, fair_shares[ledger.name]), ledger.name),
        ).name
    prefix = f"pinned to {', '.join(candidates)}: " if pinned else ""
    conflicts = [
        f"{name} holds anti-affinity {ledgers[name].anti_affinity_conflict(vm)}"
        for name in candidates
        if ledgers[name].anti_affinity_conflict(vm) is not None
    ]
    if not open_targets:
        return _unplaceable(
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
    return _unplaceable(vm, UnplaceableCause.MEMORY, prefix + reason)


def _no_candidate(
    vm: VMInfo, request: DrainRequest, excluded: tuple[tuple[str, str], ...]
) -> UnplaceableVM:
    """Why a guest has no target at all: none eligible, or none its pin allows."""
    why_excluded = dict(excluded)
    pin = request.pins.get(vm.vmid)
    if pin is None:
        detail = ", ".join(f"{name} {why}" for name, why in excluded) or "no other node"
        return _unplaceable(vm, UnplaceableCause.NO_TARGETS, f"no eligible target: {detail}")
    parts = []
    for name in pin:
        if name == request.node:
            parts.append(f"{name} is being drained")
        elif name in why_excluded:
            parts.append(f"{name} {why_excluded[name]}")
        else:
            parts.append(f"{name} not among the drain's targets")
    reason = "pinned by VMPlacement, no allowed node usable: " + ", ".join(parts)
    return _unplaceable(vm, UnplaceableCause.PIN, reason)


def _missing_memory(
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


def _ordered_moves(
    placed: list[tuple[VMInfo, str]], request: DrainRequest, weights: Mapping[str, float]
) -> tuple[PlannedMove, ...]:
    """Per target largest and smallest in turn, interleaved by drawing from the target
    least scheduled for its link (see the module docstring)."""
    lanes: dict[str, list[VMInfo]] = {}
    for vm, target in placed:
        lanes.setdefault(target, []).append(vm)
    for target, lane in lanes.items():
        lane.sort(key=lambda vm: (_move_cost(vm), memory_need(vm), -vm.vmid))
        zigzag = [lane.pop() if index % 2 == 0 else lane.pop(0) for index in range(len(lane))]
        lanes[target] = zigzag[::-1]  # pop() = next: largest, smallest, 2nd largest, ...
    scheduled = dict.fromkeys(lanes, 0)
    moves: list[PlannedMove] = []
    while any(lanes.values()):
        target = min(
            (name for name, lane in lanes.items() if lane),
            key=lambda name: (
                scheduled[name] / weights[name],
                -_move_cost(lanes[name][-1]),
                name,
            ),
        )
        vm = lanes[target].pop()
        scheduled[target] += _move_cost(vm)
        moves.append(
            PlannedMove(
                vmid=vm.vmid,
                name=vm.name,
                memory_bytes=memory_need(vm),
                transfer_bytes=transfer_bytes(vm),
                source=request.node,
                target=target,
                order=len(moves),
                online=vm.running,
                with_local_disks=bool(vm.local_disks),
            )
        )
    return tuple(moves)
