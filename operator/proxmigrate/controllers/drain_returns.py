"""NodeDrain return home: a drain with `returnGuests` whose `maintenanceDone` is set.

The cordon goes with the spec change (controllers/context.py `cordoned_nodes` leaves such
a drain out). Each pass then:

1. stops the drain: its planned moves not handed over are skipped, its queued VMMigrations
   withdrawn (the guests stay home), its running ones finish;
2. waits for those to end, and for the node to be online (a rebooted node comes back);
3. plans the return once, from the live inventory, with the drain's options (reserve,
   anti-affinity, VMPlacement pins, other drains' cordons): `planning.plan_return`. Guests
   that moved again, are pinned elsewhere or no longer fit are ReturnSkipped, each with its
   reason and an Event;
4. creates the returns' VMMigrations like the drain's own moves (its label and window,
   priority from the order the guests left, `-ret-` in their names) and tracks them to
   Returned (status/drain_return.py).

Deleting the drain meanwhile cancels the queued returns and lets running ones finish
(`drain_release.release_drain`, which handles every VMMigration with the drain's label).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proxmigrate.api.constants import VMMIGRATIONS
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import DrainReturnPhase
from proxmigrate.api.events import EventReason
from proxmigrate.controllers import events
from proxmigrate.controllers.children import (
    DRAIN_LABEL,
    child_name,
    child_vmid,
    is_deleting,
    withdraw_onto,
)
from proxmigrate.controllers.context import ClusterContext, cordoned_nodes
from proxmigrate.controllers.drain_requests import (
    drain_request,
    drain_window,
    with_local_resources,
)
from proxmigrate.planning.returns import plan_return
from proxmigrate.runtime import drain_progress as progress
from proxmigrate.status import drain_return as returns
from proxmigrate.status.drain import progress_status
from proxmigrate.status.drain_entry import DrainEntry, parse_entries

if TYPE_CHECKING:
    from proxmigrate.controllers.drains import DrainReconciler


def return_child_name(drain_name: str, uid: str, vmid: int) -> str:
    """A return's VMMigration: the drain's name, `ret`, the guest and the drain's uid (a
    drain's own moves are `<drain>-<vmid>-<uid>`)."""
    return child_name(drain_name, f"ret-{vmid}-{uid[:5]}")


async def return_home(
    drain: DrainReconciler,
    spec: NodeDrainSpec,
    context: ClusterContext,
    drains: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> None:
    """One pass of a drain whose maintenance is declared done (see the module doc)."""
    uid = str(drain.body["metadata"]["uid"])
    moves: dict[int, Mapping[str, Any]] = {}
    homecomings: dict[int, Mapping[str, Any]] = {}
    for child in drain.children(DRAIN_LABEL):
        if is_deleting(child):
            continue
        vmid = child_vmid(child)
        is_return = child["metadata"]["name"] == return_child_name(drain.name, uid, vmid)
        (homecomings if is_return else moves)[vmid] = child
    location = {vm.vmid: vm.node for vm in context.inventory.vms}
    advanced = progress.advance(drain.status.get("vms") or [], moves, location)
    nodes = {str(child["spec"]["target"]) for child in moves.values()}
    withdrawn = withdraw_onto(moves.values(), nodes, context.runtime)
    entries = returns.stop_draining(parse_entries(advanced), {child_vmid(c) for c in withdrawn})
    before = entries
    entries = returns.advance_returns(entries, homecomings, location)
    waiting = _waiting(entries, spec, context)
    if waiting is None:
        # PVE's verdict on the local disks and devices of the guests going home: what the
        # plan refuses (`target_refusal`) and the returns' `withLocalDisks`.
        homebound = {d.vmid for d in returns.departures(entries)} | {
            e.vmid for e in entries if e.return_phase is DrainReturnPhase.PENDING
        }
        context = await with_local_resources(context, spec.node_name, homebound)
        if returns.unplanned(entries):
            entries = await _plan(drain, spec, context, drains, entries)
    _report_skips(drain.body, before, entries)
    entries = await _create_due(drain, spec, context, entries, uid)
    status = progress_status(entries, drain.status, drain.generation, now)
    status.update(returns.return_status(entries, drain.status, drain.generation, now, waiting))
    await drain.write(status)
    for queued in withdrawn:
        await drain.kube.delete(VMMIGRATIONS, drain.namespace, queued["metadata"]["name"])


def _waiting(
    entries: Sequence[DrainEntry], spec: NodeDrainSpec, context: ClusterContext
) -> tuple[str, str] | None:
    """(reason, message) while the return cannot be planned yet, or None."""
    count = len(returns.unplanned(entries))
    running = sum(1 for entry in entries if entry.in_flight)
    if running:
        return (
            "WaitingForDrainMoves",
            f"maintenance declared done: {running} drain migrations still running; the "
            "return is planned once they end",
        )
    home = context.inventory.node(spec.node_name)
    if count and home is not None and not home.online:
        return (
            "WaitingForNode",
            f"waiting for {spec.node_name} to be online to return {count} guests",
        )
    return None


async def _plan(
    drain: DrainReconciler,
    spec: NodeDrainSpec,
    context: ClusterContext,
    drains: Sequence[Mapping[str, Any]],
    entries: list[DrainEntry],
) -> list[DrainEntry]:
    """Entries with the return of every guest the drain moved planned (moves or skips).

    The request is the drain's own, its node no longer cordoned by it (other drains'
    cordons still count: a duplicate drain of the node keeps the guests away)."""
    request = dataclasses.replace(
        drain_request(spec, context, drains),
        cordoned=cordoned_nodes(drains, spec.cluster_name),
    )
    request = await drain.pinned(request, context)
    plan = plan_return(context.inventory, returns.departures(entries), request)
    return returns.with_return_plan(entries, plan)


def _report_skips(
    body: Mapping[str, Any], before: Sequence[DrainEntry], after: Sequence[DrainEntry]
) -> None:
    """A ReturnSkipped Event for each guest newly left where it is, with the reason."""
    skipped = {e.vmid for e in before if e.return_phase is DrainReturnPhase.SKIPPED}
    for entry in after:
        if entry.return_phase is DrainReturnPhase.SKIPPED and entry.vmid not in skipped:
            name = f" ({entry.name})" if entry.name else ""
            message = f"VM {entry.vmid}{name} stays on {entry.target}: {entry.return_reason}"
            events.post(body, "Warning", EventReason.RETURN_SKIPPED, message)


async def _create_due(
    drain: DrainReconciler,
    spec: NodeDrainSpec,
    context: ClusterContext,
    entries: list[DrainEntry],
    uid: str,
) -> list[DrainEntry]:
    """Entries with the VMMigrations of the returns due now created (Queued)."""
    due = {entry.vmid for entry in returns.due_returns(entries, drain_window(spec, context))}
    updated = []
    for entry in entries:
        if entry.vmid in due and entry.target:
            name = return_child_name(drain.name, uid, entry.vmid)
            order = entry.order or 0
            if await drain.create_move(
                spec, context, entry.vmid, entry.target, entry.source, order, name
            ):
                entry = entry.but(return_phase=DrainReturnPhase.QUEUED, return_migration=name)
        updated.append(entry)
    return updated
