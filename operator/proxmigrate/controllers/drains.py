"""NodeDrain: plan the drain of a node, then move its guests through VMMigrations.

A kopf daemon per NodeDrain reconciles whenever woken (controllers/wakeups.py: its spec,
its VMMigrations, other drains' cordons and loads, the cluster's inventory or spec): plan
(or re-plan while nothing moves yet), then create VMMigrations in plan order within the
drain's window and derive the status from them (runtime/drain_progress.py; a started
drain's pass: controllers/drain_execution.py). Deleting the NodeDrain cancels queued
migrations, lets running ones finish (detached from the drain) and lifts the cordon. With
`returnGuests`, `maintenanceDone` ends the drain instead and sends its guests home
(controllers/drain_returns.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from proxmigrate.api.constants import GROUP, NODEDRAINS, VERSION, VMMIGRATIONS
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import DrainPhase, DrainVMPhase, LocalDisksPolicy
from proxmigrate.api.fields import SpecError
from proxmigrate.controllers import drain_series, events
from proxmigrate.controllers.cache import Caches
from proxmigrate.controllers.children import (
    DRAIN_LABEL,
    child_name,
    is_deleting,
    migration_manifest,
)
from proxmigrate.controllers.context import (
    ClusterContext,
    ClusterNotReady,
    cluster_context,
    placement_pins,
)
from proxmigrate.controllers.drain_execution import execute
from proxmigrate.controllers.drain_requests import (
    drain_request,
    drain_window,
    rival_owner,
    with_earlier_plans,
    with_local_resources,
)
from proxmigrate.controllers.drain_returns import return_home
from proxmigrate.controllers.reconcile import (
    STOP_GRACE_SECONDS,
    Reconciler,
    reconcile_until_stopped,
)
from proxmigrate.controllers.registry import registry_of
from proxmigrate.planning import DrainPlan, DrainRequest, PlanError, plan_drain
from proxmigrate.runtime import drain_progress as progress


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _same_plan(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if not current:
        return False
    return all(current.get(key) == new.get(key) for key in new if key != "generatedTime")


class DrainReconciler(Reconciler):
    """One pass over one NodeDrain."""

    plural = NODEDRAINS

    async def run(self) -> None:
        now = _now()
        try:
            spec = NodeDrainSpec.from_spec(self.body.get("spec"))
        except SpecError as error:
            await self._wait(DrainPhase.BLOCKED, "InvalidSpec", str(error), now, degraded=True)
            return
        self.waker.cluster = spec.cluster_name
        drains, context = await asyncio.gather(self._drains_created_together(), self._context(spec))
        owner = rival_owner(spec, drains, self.name)
        if owner is not None:
            message = (
                f"node {spec.node_name} is already being drained by NodeDrain "
                f"{owner}; this one does nothing (delete it)"
            )
            await self._wait(DrainPhase.BLOCKED, "DuplicateDrain", message, now, degraded=True)
            return
        if isinstance(context, ClusterNotReady):
            await self._wait(DrainPhase.PENDING, context.reason, str(context), now, degraded=False)
            return
        if spec.maintenance_done:
            await return_home(self, spec, context, drains, now)
            return
        request = drain_request(spec, context, drains)
        if self.status.get("startTime"):
            await execute(self, spec, context, request, now)
            return
        request = await self.pinned(request, context)
        request = with_earlier_plans(request, spec, self.body, context, drains)
        try:
            plan = plan_drain(context.inventory, request)
        except PlanError as error:
            await self._wait(DrainPhase.BLOCKED, "InvalidNode", str(error), now, degraded=True)
            return
        await self._start(spec, context, plan, now)

    async def _context(self, spec: NodeDrainSpec) -> ClusterContext | ClusterNotReady:
        """The cluster's context; until the return is asked, with what PVE says of the
        local disks and devices of the node's guests. Read while the drains created
        together settle: those PVE reads (0.1-0.3 s for 12 guests) no longer follow it."""
        try:
            context = await cluster_context(
                self.caches, self.registry, self.namespace, spec.cluster_name
            )
        except ClusterNotReady as error:
            return error
        if spec.maintenance_done:
            return context
        return await with_local_resources(context, spec.node_name)

    async def _drains_created_together(self) -> list[dict[str, Any]]:
        """Every NodeDrain; before this one's first plan, listed only once the drains
        created together with it (one `kubectl apply -f`) have appeared, so that it
        honours their cordons (`Registry.drains_settled`)."""
        if not self.status.get("startTime"):
            await self.registry.drains_settled(self.namespace)
        return self.caches.drains(self.namespace)

    async def _start(
        self, spec: NodeDrainSpec, context: ClusterContext, plan: DrainPlan, now: datetime.datetime
    ) -> None:
        """Write the plan; start moving unless this is a dry run or the plan does not fit."""
        document = progress.plan_document(plan, now)
        if _same_plan(self.status.get("plan"), document):
            document = dict(self.status["plan"])
        extra: dict[str, Any] = {"plan": document, "targets": list(plan.targets)}
        blocked = not plan.complete and not spec.allow_partial
        if spec.dry_run:
            extra["vms"] = progress.plan_entries(plan)
            message = (
                f"dry run: {len(plan.moves)} VMs planned, {len(plan.unplaceable)} unplaceable, "
                f"{len(plan.skipped)} skipped; nothing is moved (see status.plan)"
            )
            if blocked:
                message += f"; a real drain would be Blocked: {plan.blocked_message()}"
            phase = DrainPhase.BLOCKED if blocked else DrainPhase.PENDING
            await self._wait(phase, "DryRun", message, now, degraded=blocked, extra=extra)
            return
        if blocked:
            message = f"{plan.blocked_message()}; nothing is moved (allowPartial is false)"
            await self._wait(
                DrainPhase.BLOCKED, "InsufficientCapacity", message, now, degraded=True, extra=extra
            )
            return
        entries = progress.plan_entries(plan)
        entries = await self.create_due(spec, context, entries)
        status = progress.progress_status(entries, self.status, self.generation, now)
        await self.write({**status, **extra})

    async def pinned(self, request: DrainRequest, context: ClusterContext) -> DrainRequest:
        """`request` with the nodes every VMPlacement allows its guests."""
        placements = self.caches.placements(self.namespace)
        pins = placement_pins(placements, context.inventory, context.runtime.name)
        return dataclasses.replace(request, pins=pins)

    async def create_due(
        self, spec: NodeDrainSpec, context: ClusterContext, entries: list[progress.Entry]
    ) -> list[progress.Entry]:
        """`entries` with the VMMigrations of the moves due now (the drain's window) made."""
        window = drain_window(spec, context)
        due = {int(entry["vmid"]) for entry in progress.due_for_migration(entries, window)}
        updated = []
        for entry in entries:
            vmid = int(entry["vmid"])
            if vmid in due:
                # The drain's uid in the name: the VMMigrations a deleted drain of the same
                # name left as its record (DRAIN_HISTORY_LABEL) never take the name a new
                # one needs.
                name = child_name(self.name, f"{vmid}-{self.body['metadata']['uid'][:5]}")
                source, target = str(entry["from"]), str(entry["to"])
                order = int(entry.get("order") or 0)
                if await self.create_move(spec, context, vmid, source, target, order, name):
                    entry = {**entry, "phase": DrainVMPhase.QUEUED.value, "migration": name}
            updated.append(entry)
        return updated

    async def create_move(
        self,
        spec: NodeDrainSpec,
        context: ClusterContext,
        vmid: int,
        source: str,
        target: str,
        order: int,
        name: str,
    ) -> bool:
        """Create the VMMigration `name` of one of the drain's moves (or returns), priority
        from its plan `order`; False while a withdrawn one of that name is still there."""
        vm = context.inventory.vm(vmid)
        manifest = migration_manifest(
            owner=self.body,
            label_key=DRAIN_LABEL,
            cluster=spec.cluster_name,
            vmid=vmid,
            target=target,
            source=source,
            online=True,  # the runtime migrates stopped guests offline
            with_local_disks=bool(vm and vm.local_disks)
            and spec.local_disks is LocalDisksPolicy.MIGRATE,
            priority=progress.migration_priority(order),
            name=name,
        )
        try:
            await self.create_child(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            existing = await self.kube.get(VMMIGRATIONS, self.namespace, name)
            return not (
                existing is None or is_deleting(existing) or existing["spec"]["target"] != target
            )
        return True

    async def _wait(
        self,
        phase: DrainPhase,
        reason: str,
        message: str,
        now: datetime.datetime,
        *,
        degraded: bool,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        status = progress.waiting_status(
            self.status, phase, reason, message, self.generation, now, degraded=degraded
        )
        await self.write({**status, **(extra or {})})

    async def write(self, status: Mapping[str, Any]) -> None:
        merged = {**self.status, **status}
        drain_series.export(self.namespace, self.name, self.body.get("spec"), merged)
        if any(self.status.get(key) != value for key, value in status.items()):
            await self.write_status(status)
            events.drain_transition(self.body, self.status, status)


@kopf.daemon(
    GROUP,
    VERSION,
    NODEDRAINS,
    cancellation_backoff=STOP_GRACE_SECONDS,
    cancellation_timeout=5.0,
    backoff=5.0,
)
async def node_drain(
    body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """Lives as long as the NodeDrain on the active replica and reconciles when woken.
    When it ends (deleted, or peering paused this replica) its series go."""
    try:
        await reconcile_until_stopped(
            DrainReconciler, body, Caches.of(kwargs), registry_of(memo), stopped
        )
    finally:
        drain_series.forget(body.metadata["namespace"], body.metadata["name"])
