"""What a NodeDrain plans from: which drain owns a node, the planner's request (cordons,
the cluster's moves in flight, avoided targets), the inventory with the drained guests' local
resources, and how many of its migrations may run at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence, Set
from typing import Any

from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import DrainPhase, DrainReturnPhase, DrainVMPhase
from proxmigrate.api.fields import SpecError
from proxmigrate.controllers.context import (
    INVENTORY_MAX_AGE,
    ClusterContext,
    cordoned_nodes,
    drains_of_cluster,
)
from proxmigrate.planning import DrainRequest, PlanError, plan_drains
from proxmigrate.runtime import drain_progress as progress

# Guests whose move is planned or running: they will occupy their targets' memory.
UNDER_WAY = frozenset({DrainVMPhase.PENDING, DrainVMPhase.QUEUED, DrainVMPhase.MIGRATING})
RETURNS_UNDER_WAY = frozenset(
    {DrainReturnPhase.PENDING, DrainReturnPhase.QUEUED, DrainReturnPhase.MIGRATING}
)


def owning_drain(
    drains: Sequence[Mapping[str, Any]], cluster: str, node: str
) -> Mapping[str, Any] | None:
    """The NodeDrain that owns `node`: the oldest live, non-dry-run one (then by name) that
    has not finished returning its guests (a Returned drain is only a record)."""
    candidates = [
        d
        for d in drains_of_cluster(drains, cluster)
        if d["spec"]["nodeName"] == node
        and (d.get("status") or {}).get("phase") != DrainPhase.RETURNED
    ]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda d: (d["metadata"].get("creationTimestamp", ""), d["metadata"]["name"]),
    )


def rival_owner(spec: NodeDrainSpec, drains: Sequence[Mapping[str, Any]], name: str) -> str | None:
    """The name of the NodeDrain that owns the node of `spec` (NodeDrain `name`) instead of
    it, or None. Dry runs and drains whose maintenance is done compete with no one: a
    Returned drain stays Returned when a new drain of its node starts."""
    if spec.dry_run or spec.maintenance_done:
        return None
    owner = owning_drain(drains, spec.cluster_name, spec.node_name)
    if owner is None or owner["metadata"]["name"] == name:
        return None
    return str(owner["metadata"]["name"])


def drain_request(
    spec: NodeDrainSpec, context: ClusterContext, drains: Sequence[Mapping[str, Any]]
) -> DrainRequest:
    """The planner's request with the cordons of every NodeDrain; pins come with
    `DrainReconciler.pinned`, read only when something is to be planned."""
    placement = context.spec.placement
    return DrainRequest(
        node=spec.node_name,
        targets=spec.targets,
        cordoned=cordoned_nodes(drains, spec.cluster_name) | {spec.node_name},
        selector=spec.vm_selector,
        stopped_vms=spec.stopped_vms,
        templates=spec.templates,
        local_disks=spec.local_disks,
        reserve=spec.memory_reserve(placement),
        anti_affinity_prefix=placement.anti_affinity_tag_prefix,
        # one plan per cluster: the runtime's queued and running migrations (drains',
        # placements', by hand) and what other drains planned but have not started yet
        in_flight={**moves_elsewhere(spec, drains), **context.runtime.engine.in_flight()},
        avoid=spec.avoid_targets,
        link_gbps=dict(context.spec.migration_policy.node_links_gbps),
    )


def with_earlier_plans(
    request: DrainRequest,
    spec: NodeDrainSpec,
    body: Mapping[str, Any],
    context: ClusterContext,
    drains: Sequence[Mapping[str, Any]],
) -> DrainRequest:
    """`request` (NodeDrain `body`'s first plan) counting as in flight the moves of the
    cluster's NodeDrains that make their first plan with it and were created before it
    (creationTimestamp, then name), planned first (`plan_drains`). Drains of one `kubectl
    apply` plan at the same moment (`Registry.drains_settled`), none has written its moves
    yet, and each alone would send its tail to the same roomy target; drains that started
    count through their entries (`moves_elsewhere`). The earlier drains' guests carry the
    local disks and devices known so far (their own drains read them)."""

    def created(drain: Mapping[str, Any]) -> tuple[str, str]:
        meta = drain["metadata"]
        return (str(meta.get("creationTimestamp", "")), str(meta["name"]))

    earlier = []
    for other in sorted(drains_of_cluster(drains, spec.cluster_name), key=created):
        if created(other) >= created(body) or (other.get("status") or {}).get("startTime"):
            continue
        try:
            other_spec = NodeDrainSpec.from_spec(other.get("spec"))
        except SpecError:
            continue
        node = context.inventory.node(other_spec.node_name)
        if (
            node is None
            or not node.online
            or other_spec.node_name == spec.node_name
            or other_spec.maintenance_done
            or rival_owner(other_spec, drains, created(other)[1]) is not None
        ):
            continue
        other_request = drain_request(other_spec, context, drains)
        earlier.append((other_spec, dataclasses.replace(other_request, pins=request.pins)))
    try:
        plans = plan_drains(context.inventory, [other for _, other in earlier])
    except PlanError:  # such a drain is Blocked and moves nothing
        return request
    moves = {
        move.vmid: move.target
        for (other_spec, _), plan in zip(earlier, plans, strict=True)
        if plan.complete or other_spec.allow_partial  # else Blocked: nothing moves
        for move in plan.moves
    }
    return dataclasses.replace(request, in_flight={**moves, **request.in_flight})


def moves_elsewhere(spec: NodeDrainSpec, drains: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Where the cluster's other NodeDrains still move guests (vmid -> node: their entries
    not yet final, and their returns under way into their own node)."""
    moves: dict[int, str] = {}
    for other in drains_of_cluster(drains, spec.cluster_name):
        if other["spec"].get("nodeName") == spec.node_name:
            continue
        for entry in (other.get("status") or {}).get("vms") or []:
            if entry.get("returnPhase") in RETURNS_UNDER_WAY:
                node = entry.get("from")
            elif progress.entry_phase(entry) in UNDER_WAY:
                node = entry.get("to")
            else:
                continue
            if node:
                moves[int(entry["vmid"])] = str(node)
    return moves


async def with_local_resources(
    context: ClusterContext, node: str, vmids: Set[int] = frozenset()
) -> ClusterContext:
    """`context` whose inventory knows the local disks and devices of `node`'s guests and
    of `vmids` (PVE's precondition check, kept per guest: no requests while the answers are
    fresh), which decide `localDisks`, the passthrough refusal and `withLocalDisks`."""
    inventory = await context.runtime.refresh_inventory(
        INVENTORY_MAX_AGE, local_for=lambda vm: vm.node == node or vm.vmid in vmids
    )
    return dataclasses.replace(context, inventory=inventory)


def drain_window(spec: NodeDrainSpec, context: ClusterContext) -> int | None:
    """Most of the drain's migrations (moves or returns) in flight at once; None: no cap of
    its own, the cluster's engine throttles."""
    if spec.max_parallel is None:
        return None
    return spec.effective_max_parallel(context.spec.migration_policy.max_parallel)
