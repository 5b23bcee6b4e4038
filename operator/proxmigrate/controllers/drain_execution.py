"""A started NodeDrain's pass: its moves followed, withdrawn, added to, and handed over.

Once a drain has started (`status.startTime`), its plan is no longer remade: each pass
(controllers/drains.py) advances its entries from their VMMigrations and where PVE now has
the guests, withdraws the queued moves onto targets that became unusable (cordoned by
another drain, offline), plans the guests that arrived on the node since, and creates the
VMMigrations now due within the drain's window.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proxmigrate.api.constants import VMMIGRATIONS
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.controllers.children import DRAIN_LABEL, child_vmid, is_deleting, withdraw_onto
from proxmigrate.controllers.context import ClusterContext, unusable_targets
from proxmigrate.controllers.drain_requests import UNDER_WAY
from proxmigrate.planning import DrainRequest, PlanError, plan_drain
from proxmigrate.runtime import drain_progress as progress

if TYPE_CHECKING:
    from proxmigrate.controllers.drains import DrainReconciler


async def execute(
    drain: DrainReconciler,
    spec: NodeDrainSpec,
    context: ClusterContext,
    request: DrainRequest,
    now: datetime.datetime,
) -> None:
    """One pass of the started `drain`; the withdrawn VMMigrations are deleted once its
    status no longer counts on them."""
    children = {
        child_vmid(child): child for child in drain.children(DRAIN_LABEL) if not is_deleting(child)
    }
    location = {vm.vmid: vm.node for vm in context.inventory.vms}
    entries = progress.advance(drain.status.get("vms") or [], children, location)
    unusable = unusable_targets(request.cordoned, context.inventory)
    withdrawn = withdraw_onto(children.values(), unusable, context.runtime)
    entries = progress.without_moves_onto(
        entries, unusable, {child_vmid(child) for child in withdrawn}
    )
    entries += await _arrivals(drain, entries, context, request)
    entries = await drain.create_due(spec, context, entries)
    await drain.write(progress.progress_status(entries, drain.status, drain.generation, now))
    for child in withdrawn:
        await drain.kube.delete(VMMIGRATIONS, drain.namespace, child["metadata"]["name"])


async def _arrivals(
    drain: DrainReconciler,
    entries: Sequence[Mapping[str, Any]],
    context: ClusterContext,
    request: DrainRequest,
) -> list[progress.Entry]:
    """Guests that appeared on the node since the plan, planned now."""
    known = {int(entry["vmid"]) for entry in entries}
    if all(vm.vmid in known for vm in context.inventory.vms_on(request.node)):
        return []
    under_way = {
        int(entry["vmid"]): str(entry["to"])
        for entry in entries
        if entry.get("to") and progress.entry_phase(entry) in UNDER_WAY
    }
    request = dataclasses.replace(request, in_flight={**request.in_flight, **under_way})
    try:
        plan = plan_drain(context.inventory, await drain.pinned(request, context))
        return progress.new_arrivals(entries, plan)
    except PlanError:
        return []
