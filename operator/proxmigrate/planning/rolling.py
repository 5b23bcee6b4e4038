"""Rolling maintenance: drain nodes a step at a time, return their guests, move on (pure).

The whole run is planned up front on projected inventories: each step drains its nodes
with the drain planner (its nodes cordoned together, the nodes of later steps as targets of
last resort, `DrainRequest.avoid`, since a guest parked there moves again), then, when
asked, plans the return of the step's guests home (planning/returns.py) on the inventory
the drains leave. Projections come from `with_pending_moves`, which books a guest's full
memory on its target and frees only its used memory on its source: a step that fits on
paper also fits on the cluster. A controller executes step 1 and plans again from the live
inventory before each next step, so failures and drift never leave the plan stale.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from proxmigrate.inventory import Inventory
from proxmigrate.planning.concurrent import plan_drains
from proxmigrate.planning.drain import DrainRequest
from proxmigrate.planning.drain_plan import DrainPlan, PlannedMove
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.projection import with_pending_moves
from proxmigrate.planning.returns import ReturnPlan, departures_of, plan_return
from proxmigrate.planning.units import format_bytes


def _no_options() -> DrainRequest:
    return DrainRequest(node="")


@dataclass(frozen=True)
class RollingRequest:
    """`nodes` in maintenance order, `at_once` of them per step.

    `options` carries the per-drain settings (selector, policies, reserve, anti-affinity,
    pins, nodes cordoned by other drains, restricted targets), as a NodeDrain spec parses
    into; its `node` is ignored.
    """

    nodes: tuple[str, ...]
    at_once: int = 1
    return_guests: bool = True
    options: DrainRequest = field(default_factory=_no_options)


@dataclass(frozen=True)
class RollingStep:
    """One step: its drains (one plan per node), then the return of their guests."""

    index: int  # from 1
    nodes: tuple[str, ...]
    drains: tuple[DrainPlan, ...]
    returns: ReturnPlan
    # vmids this step's drains park on a node a later step drains (each moves again, unless
    # its return takes it home first): only when no other target had room
    parked_on_later: tuple[int, ...]

    @property
    def blocked(self) -> bool:
        return not all(plan.complete for plan in self.drains)

    @property
    def missing_memory_bytes(self) -> int:
        return sum(plan.missing_memory_bytes for plan in self.drains)

    @property
    def moves(self) -> tuple[PlannedMove, ...]:
        return tuple(move for plan in self.drains for move in plan.moves) + self.returns.moves

    def blocked_message(self) -> str:
        """One line for a `Blocked` condition: the step's capacity check; empty when it fits."""
        failing = [f"{p.node}: {p.blocked_message()}" for p in self.drains if not p.complete]
        if not failing:
            return ""
        head = f"step {self.index} ({', '.join(self.nodes)})"
        if self.missing_memory_bytes:
            head += f" lacks {format_bytes(self.missing_memory_bytes)} of memory"
        return f"{head}: " + " | ".join(failing)


@dataclass(frozen=True)
class RollingPlan:
    steps: tuple[RollingStep, ...]

    @property
    def first_blocked(self) -> RollingStep | None:
        return next((step for step in self.steps if step.blocked), None)

    @property
    def moves(self) -> tuple[PlannedMove, ...]:
        return tuple(move for step in self.steps for move in step.moves)

    @property
    def total_transfer_bytes(self) -> int:
        return sum(move.transfer_bytes for move in self.moves)


def rolling_steps(nodes: tuple[str, ...], at_once: int) -> tuple[tuple[str, ...], ...]:
    """`nodes` cut into steps of `at_once`, in order."""
    return tuple(nodes[index : index + at_once] for index in range(0, len(nodes), at_once))


def plan_rolling(inventory: Inventory, request: RollingRequest) -> RollingPlan:
    """Every step of the maintenance; PlanError for a request that cannot be planned at all."""
    _check(inventory, request)
    steps = rolling_steps(request.nodes, request.at_once)
    planned = []
    for index, nodes in enumerate(steps):
        later = frozenset(name for step in steps[index + 1 :] for name in step)
        step, inventory = _plan_step(inventory, request, index + 1, nodes, later)
        planned.append(step)
    return RollingPlan(tuple(planned))


def _check(inventory: Inventory, request: RollingRequest) -> None:
    if not request.nodes:
        raise PlanError("no node to maintain: list at least one")
    if request.at_once < 1:
        raise PlanError(f"nodes at once must be at least 1, got {request.at_once}")
    repeated = sorted(name for name, n in Counter(request.nodes).items() if n > 1)
    if repeated:
        raise PlanError(f"node {repeated[0]!r} is listed more than once")
    unknown = [name for name in request.nodes if inventory.node(name) is None]
    if unknown:
        known = ", ".join(sorted(n.name for n in inventory.nodes)) or "none"
        raise PlanError(f"node {unknown[0]!r} is not in the cluster (nodes: {known})")


def _plan_step(
    inventory: Inventory,
    request: RollingRequest,
    index: int,
    nodes: tuple[str, ...],
    later: frozenset[str],
) -> tuple[RollingStep, Inventory]:
    """The step's plan and the inventory it leaves."""
    options = request.options
    cordoned = options.cordoned | frozenset(nodes)
    drains = plan_drains(
        inventory, [_drain_request(options, node, cordoned, later) for node in nodes]
    )
    departed = [move for plan in drains for move in plan.moves]
    inventory = with_pending_moves(inventory, {m.vmid: m.target for m in departed})
    returns = ReturnPlan()
    if request.return_guests:
        returns = plan_return(inventory, departures_of(departed), options)
        inventory = with_pending_moves(inventory, {m.vmid: m.target for m in returns.moves})
    parked = tuple(move.vmid for move in departed if move.target in later)
    return RollingStep(index, nodes, tuple(drains), returns, parked), inventory


def _drain_request(
    options: DrainRequest, node: str, cordoned: frozenset[str], later: frozenset[str]
) -> DrainRequest:
    """One node's drain within a step: the other nodes of the step are cordoned with it."""
    targets = options.targets
    return replace(
        options,
        node=node,
        targets=None if targets is None else tuple(t for t in targets if t != node),
        cordoned=cordoned,
        avoid=options.avoid | later,
    )
