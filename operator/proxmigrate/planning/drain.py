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
   bytes to receive, in flight included, against its fair share, then CPU), ties by name,
   among those whose link can still take the guest's bytes within the drain's floor so far
   (its link budget: planning/links.py `link_budgets`); when none can, the target where
   they end soonest at its link. A target's fair share and budget are weighted by the link
   it takes the bytes in on where links are declared (`DrainRequest.link_gbps`), else even
   (planning/drain_targets.py).
3. Order: each target's guests alternate largest and smallest, interleaved so that parallel
   moves hit distinct targets and all targets finish together; HA guests, whose move waits
   for the HA manager's rounds, not among the last (planning/drain_order.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning.capacity import MemoryReserve, TargetLedger, memory_need, move_cost
from proxmigrate.planning.drain_order import ordered_moves
from proxmigrate.planning.drain_plan import (
    DrainPlan,
    SkippedVM,
    UnplaceableCause,
    UnplaceableVM,
    unplaceable,
)
from proxmigrate.planning.drain_targets import (
    choose_target,
    conflict_free,
    incoming_costs,
    missing_memory,
)
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.links import ingress_weights, link_budgets
from proxmigrate.planning.projection import with_pending_moves
from proxmigrate.planning.selection import (
    DEFAULT_ANTI_AFFINITY_PREFIX,
    VMSelector,
    anti_affinity_groups,
)


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


def plan_drain(inventory: Inventory, request: DrainRequest) -> DrainPlan:
    """Plan the drain of `request.node`; raises PlanError for a request that names bad nodes."""
    _check_source(inventory, request.node)
    targets, excluded = _eligible_targets(inventory, request)
    in_flight = {
        vmid: target
        for vmid, target in request.in_flight.items()
        if target != request.node and target not in request.cordoned
    }
    incoming = incoming_costs(inventory, in_flight)
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
    total_cost = sum(move_cost(vm) for vm in to_place) + elsewhere
    total_weight = sum(weights.values()) or 1.0
    fair_shares = {name: total_cost * weights[name] / total_weight for name in targets}
    placed_cost = 0  # this drain's bytes placed so far
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
        cost = move_cost(vm)
        budgets = link_budgets(
            request.node, weights, request.link_gbps, placed_cost + cost, elsewhere
        )
        outcome = choose_target(
            vm, candidates, vm.vmid in request.pins, ledgers, fair_shares, budgets, request.avoid
        )
        if isinstance(outcome, str):
            ledgers[outcome].admit(vm, cost)
            placed_cost += cost
            placed.append((vm, outcome))
            continue
        if outcome.cause is UnplaceableCause.MEMORY:
            short_of_memory.append((vm, conflict_free(vm, candidates, ledgers)))
        unplaceable.append(outcome)

    return DrainPlan(
        node=request.node,
        targets=targets,
        excluded_targets=excluded,
        moves=ordered_moves(placed, request.node, weights),
        skipped=tuple(skipped),
        unplaceable=tuple(sorted(unplaceable, key=lambda vm: vm.vmid)),
        missing_memory_bytes=missing_memory(short_of_memory, ledgers),
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
        return unplaceable(
            vm, UnplaceableCause.LOCAL_DEVICES, f"uses local devices ({devices}): PVE refuses"
        )
    if vm.local_disks and request.local_disks != LocalDisksPolicy.MIGRATE:
        disks = ", ".join(vm.local_disks)
        if request.local_disks == LocalDisksPolicy.SKIP:
            return SkippedVM(vm.vmid, vm.name, f"has local disks ({disks}) (localDisks: skip)")
        return unplaceable(
            vm,
            UnplaceableCause.LOCAL_DISKS,
            f"has local disks ({disks}); localDisks is fail: set migrate or skip",
        )
    return None


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


def _no_candidate(
    vm: VMInfo, request: DrainRequest, excluded: tuple[tuple[str, str], ...]
) -> UnplaceableVM:
    """Why a guest has no target at all: none eligible, or none its pin allows."""
    why_excluded = dict(excluded)
    pin = request.pins.get(vm.vmid)
    if pin is None:
        detail = ", ".join(f"{name} {why}" for name, why in excluded) or "no other node"
        return unplaceable(vm, UnplaceableCause.NO_TARGETS, f"no eligible target: {detail}")
    parts = []
    for name in pin:
        if name == request.node:
            parts.append(f"{name} is being drained")
        elif name in why_excluded:
            parts.append(f"{name} {why_excluded[name]}")
        else:
            parts.append(f"{name} not among the drain's targets")
    reason = "pinned by VMPlacement, no allowed node usable: " + ", ".join(parts)
    return unplaceable(vm, UnplaceableCause.PIN, reason)
