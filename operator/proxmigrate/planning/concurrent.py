"""Drains planned together: one plan per cluster (pure).

Each node's plan counts the moves of the plans before it as in flight
(`DrainRequest.in_flight`): their memory taken on their targets, their bytes headed there in
the targets' load score. The NodeDrain controller plans each drain alone with the cluster's
moves in flight; rolling maintenance steps and `proxmigrate simulate` / the bench plan the
drains of one step or run with this, so all three share the planner and its bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from proxmigrate.inventory import Inventory
from proxmigrate.planning.drain import DrainRequest, plan_drain
from proxmigrate.planning.drain_plan import DrainPlan


def plan_drains(inventory: Inventory, requests: Iterable[DrainRequest]) -> tuple[DrainPlan, ...]:
    """One plan per request, in order, each seeing the earlier ones' moves as in flight."""
    in_flight: dict[int, str] = {}
    plans = []
    for request in requests:
        plan = plan_drain(inventory, replace(request, in_flight={**request.in_flight, **in_flight}))
        plans.append(plan)
        in_flight.update((move.vmid, move.target) for move in plan.moves)
    return tuple(plans)
