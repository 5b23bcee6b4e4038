"""NodeMaintenance: a rolling maintenance, a step of NodeDrains at a time.

A kopf daemon per NodeMaintenance reconciles whenever woken (its spec or done annotation,
its NodeDrains' status: controllers/wakeups.py; a blocked maintenance also every
BLOCKED_RETRY_SECONDS): each node's
entry follows its NodeDrain (status/maintenance.py); a drained node waits for the
done-signal, which sets the drain's `maintenanceDone` (its guests return) or, without
return, deletes the drain (the cordon is lifted); when no step is under way, the nodes
still to do are planned on the live inventory (`plan_rolling`) and the first step's
NodeDrains are created, owned by the maintenance, with the later steps' nodes as
`avoidTargets`. Deleting the maintenance deletes its NodeDrains (garbage collector).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from proxmigrate.api.constants import GROUP, NODEDRAINS, NODEMAINTENANCES, VERSION
from proxmigrate.api.enums import FailurePolicy, MaintenancePhase
from proxmigrate.api.events import EventReason
from proxmigrate.api.fields import SpecError
from proxmigrate.api.maintenance import MAINTENANCE_LABEL, NodeMaintenanceSpec, done_nodes
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.controllers import events
from proxmigrate.controllers.cache import Caches, namespaced
from proxmigrate.controllers.children import child_name, is_deleting, label_value, owner_reference
from proxmigrate.controllers.context import (
    INVENTORY_MAX_AGE,
    ClusterContext,
    ClusterNotReady,
    cluster_context,
    cordoned_nodes,
    placement_pins,
)
from proxmigrate.controllers.drain_requests import drain_request
from proxmigrate.controllers.reconcile import UNSEEN_CHILD_SECONDS, Reconciler
from proxmigrate.controllers.reconcile import reconcile_until_stopped as reconcile
from proxmigrate.controllers.registry import registry_of
from proxmigrate.kube import shared_kube
from proxmigrate.planning import PlanError
from proxmigrate.planning.rolling import RollingPlan, RollingRequest, plan_rolling
from proxmigrate.status import maintenance as documents
from proxmigrate.status.maintenance import NodeEntry, NodePhase, Verdict

log = logging.getLogger(__name__)
BLOCKED_RETRY_SECONDS = 30.0  # a blocked or waiting maintenance plans again this often
_FAILING = (NodePhase.FAILED, NodePhase.BLOCKED)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MaintenanceReconciler(Reconciler):
    """One pass over one NodeMaintenance."""

    plural = NODEMAINTENANCES
    plan: dict[str, Any] | None = None  # status.plan, when this pass planned

    async def run(self) -> None:
        now = _now()
        try:
            spec = NodeMaintenanceSpec.from_spec(self.body.get("spec"))
        except SpecError as error:
            names = [str(n) for n in (self.body.get("spec") or {}).get("nodes") or []]
            kept = documents.node_entries(names, self.status.get("nodes") or [])
            verdict = Verdict(MaintenancePhase.BLOCKED, "InvalidSpec", str(error))
            await self._write(kept, verdict, now)
            return
        drains = {str(d["spec"]["nodeName"]): d for d in self._drains() if not is_deleting(d)}
        recorded = documents.node_entries(spec.nodes, self.status.get("nodes") or [])
        entries = [documents.observe(e, drains.get(e.name), now) for e in recorded]
        entries = await self._signal_done(spec, entries, drains, now)
        entries = await self._let_go_of_failures(spec, entries, drains, now)
        verdict = await self._next_step(spec, entries, now)
        await self._write(entries, verdict, now)
        events.maintenance_nodes(self.body, recorded, entries)

    def _drains(self) -> list[dict[str, Any]]:
        """This maintenance's NodeDrains: those in the cache and those a pass created that
        the watch has not delivered yet."""
        label = label_value(self.name)
        cached = [
            d
            for d in self.caches.drains(self.namespace)
            if d["metadata"].get("labels", {}).get(MAINTENANCE_LABEL) == label
        ]
        seen = {d["metadata"]["name"] for d in cached}
        created = self.waker.created
        for name, (_, at) in list(created.items()):
            if name in seen or time.monotonic() - at > UNSEEN_CHILD_SECONDS:
                del created[name]
        return cached + [manifest for manifest, _ in created.values()]

    async def _signal_done(
        self,
        spec: NodeMaintenanceSpec,
        entries: list[NodeEntry],
        drains: Mapping[str, Mapping[str, Any]],
        now: datetime.datetime,
    ) -> list[NodeEntry]:
        """Nodes in maintenance the done-signal names: with return, their drain's
        `maintenanceDone` is set; without, the drain is deleted and the node is done.
        Paused: no return starts."""
        signalled = done_nodes(self.body["metadata"].get("annotations"))
        updated = []
        for entry in entries:
            drain = drains.get(entry.name)
            if entry.phase is NodePhase.IN_MAINTENANCE and entry.name in signalled and drain:
                if spec.return_guests and not spec.paused:
                    patch = {"spec": {"maintenanceDone": True}}
                    await self.kube.patch(NODEDRAINS, self.namespace, entry.drain or "", patch)
                    entry = entry.moved_to(NodePhase.RETURNING, "", now)
                elif not spec.return_guests:
                    await self.kube.delete(NODEDRAINS, self.namespace, entry.drain or "")
                    entry = entry.moved_to(NodePhase.DONE, "", now)
            updated.append(entry)
        return updated

    async def _let_go_of_failures(
        self,
        spec: NodeMaintenanceSpec,
        entries: list[NodeEntry],
        drains: Mapping[str, Mapping[str, Any]],
        now: datetime.datetime,
    ) -> list[NodeEntry]:
        """With onFailure continue, a failed or blocked node is recorded Failed and its
        drain deleted (its cordon lifted, guests stay where they are)."""
        if spec.on_failure is not FailurePolicy.CONTINUE:
            return entries
        updated = []
        for entry in entries:
            if entry.phase in _FAILING and entry.name in drains:
                await self.kube.delete(NODEDRAINS, self.namespace, entry.drain or "")
                message = entry.message or "its NodeDrain failed"
                entry = entry.moved_to(NodePhase.FAILED, message, now)
            updated.append(entry)
        return updated

    async def _next_step(
        self, spec: NodeMaintenanceSpec, entries: list[NodeEntry], now: datetime.datetime
    ) -> Verdict:
        """What the maintenance does now; may plan and start the next step."""
        summary = documents.summary(entries)
        failing = [e for e in entries if e.phase in _FAILING]
        if failing and spec.on_failure is FailurePolicy.STOP and not spec.dry_run:
            stopped = failing[0]
            phase = MaintenancePhase.FAILED
            if stopped.phase is NodePhase.BLOCKED:
                phase = MaintenancePhase.BLOCKED
            message = f"node {stopped.name}: {stopped.message or stopped.phase.value}; {summary}"
            return Verdict(phase, f"Node{stopped.phase.value}", message)
        if documents.current_step(entries):
            return Verdict(MaintenancePhase.RUNNING, "StepRunning", summary)
        pending = tuple(e.name for e in entries if e.phase is NodePhase.PENDING)
        if not pending:
            return documents.ended(entries)
        if spec.paused and not spec.dry_run:
            return Verdict(MaintenancePhase.PAUSED, "Paused", f"paused; {summary}")
        self.requeue_after = BLOCKED_RETRY_SECONDS
        try:
            context = await cluster_context(
                self.caches, self.registry, self.namespace, spec.cluster_name
            )
        except ClusterNotReady as error:
            return Verdict(MaintenancePhase.PENDING, error.reason, str(error))
        # PVE's precondition answers for the pending nodes' guests: their local disks and
        # devices decide localDisks and the passthrough refusal, as in each drain's plan
        inventory = await context.runtime.refresh_inventory(
            INVENTORY_MAX_AGE, local_for=lambda vm: vm.node in pending
        )
        context = dataclasses.replace(context, inventory=inventory)
        if spec.on_failure is FailurePolicy.CONTINUE and not spec.dry_run:
            pending = documents.skip_unusable(entries, pending, inventory, now)
            if not pending:
                return documents.ended(entries)
        try:
            plan = self._plan(spec, pending, context)
        except PlanError as error:
            return Verdict(MaintenancePhase.BLOCKED, "InvalidPlan", str(error))
        step = max((e.step for e in entries), default=0) + 1
        # numbered as the maintenance counts its steps, in the plan and in blocked messages
        plan = RollingPlan(
            tuple(dataclasses.replace(s, index=step + i) for i, s in enumerate(plan.steps))
        )
        self.plan = documents.plan_document(plan, step, now)
        first = plan.steps[0]
        later = [node for s in plan.steps[1:] for node in s.nodes]
        if spec.dry_run:
            blocked = plan.first_blocked
            message = f"dry run: {len(plan.steps)} steps, {len(plan.moves)} moves planned"
            if blocked is not None:
                message += f"; {blocked.blocked_message()}"
            return Verdict(MaintenancePhase.PENDING, "DryRun", message, blocked is not None)
        if first.blocked:
            return Verdict(
                MaintenancePhase.BLOCKED, "InsufficientCapacity", first.blocked_message()
            )
        self.requeue_after = None
        for node in first.nodes:
            index = spec.nodes.index(node)
            name = await self._create_drain(spec, node, later)
            entries[index] = dataclasses.replace(
                entries[index], step=step, drain=name, start_time=to_rfc3339(now)
            ).moved_to(NodePhase.DRAINING, "", now)
        events.post(
            self.body,
            "Normal",
            EventReason.STEP_STARTED,
            f"step {step}: draining {', '.join(first.nodes)} ({len(first.moves)} moves planned)",
        )
        later_blocked = plan.first_blocked
        if later_blocked is not None:
            message = f"a later step may not fit: {later_blocked.blocked_message()}"
            return Verdict(MaintenancePhase.RUNNING, "LaterStepBlocked", message, degraded=True)
        return Verdict(MaintenancePhase.RUNNING, "StepRunning", documents.summary(entries))

    def _plan(
        self, spec: NodeMaintenanceSpec, pending: tuple[str, ...], context: ClusterContext
    ) -> RollingPlan:
        """The rolling plan of `pending` on the live inventory, with the cordons, loads and
        pins every NodeDrain plan has."""
        all_drains = self.caches.drains(self.namespace)
        options = drain_request(spec.drain(pending[0], ()), context, all_drains)
        pins = placement_pins(
            self.caches.placements(self.namespace), context.inventory, context.runtime.name
        )
        options = dataclasses.replace(
            options, node="", cordoned=cordoned_nodes(all_drains, spec.cluster_name), pins=pins
        )
        request = RollingRequest(pending, spec.nodes_at_once, spec.return_guests, options)
        return plan_rolling(context.inventory, request)

    async def _create_drain(self, spec: NodeMaintenanceSpec, node: str, avoid: list[str]) -> str:
        name = child_name(self.name, node)
        manifest = {
            "apiVersion": self.body.get("apiVersion") or f"{GROUP}/{VERSION}",
            "kind": "NodeDrain",
            "metadata": {
                "name": name,
                "labels": {MAINTENANCE_LABEL: label_value(self.name)},
                "ownerReferences": [owner_reference(self.body)],
            },
            "spec": spec.drain_document(node, avoid),
        }
        try:
            await self.kube.create(NODEDRAINS, self.namespace, manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            return name  # made by an earlier pass (its status write was lost)
        self.waker.created[name] = (manifest, time.monotonic())
        return name

    async def _write(
        self, entries: list[NodeEntry], verdict: Verdict, now: datetime.datetime
    ) -> None:
        status = documents.maintenance_status(entries, verdict, self.status, self.generation, now)
        if self.plan is not None:
            status["plan"] = self.plan
            status["parked"] = sum(step["parked"] for step in self.plan["steps"])
        if any(self.status.get(key) != value for key, value in status.items()):
            await self.write_status(status)
            events.maintenance_transition(self.body, self.status.get("phase"), verdict)


@kopf.daemon(GROUP, VERSION, NODEMAINTENANCES, cancellation_timeout=5.0, backoff=5.0)
async def node_maintenance(
    body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """Lives as long as the NodeMaintenance on the active replica, reconciling when woken."""
    await reconcile(MaintenanceReconciler, body, Caches.of(kwargs), registry_of(memo), stopped)


@kopf.on.delete(GROUP, VERSION, NODEMAINTENANCES)
async def cancel_maintenance(
    namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> None:
    """Cancelled, unless it had ended; its NodeDrains go with it (owner references: the
    garbage collector deletes them, each cancelling its queued migrations)."""
    if status.get("phase") not in (MaintenancePhase.SUCCEEDED, MaintenancePhase.FAILED):
        cancelled = {
            "phase": MaintenancePhase.CANCELLED.value,
            "completionTime": to_rfc3339(_now()),
        }
        await shared_kube().patch_status(NODEMAINTENANCES, namespaced(namespace), name, cancelled)
