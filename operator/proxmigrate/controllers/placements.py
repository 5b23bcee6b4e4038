"""VMPlacement: keep guests on their declared nodes by creating VMMigrations on drift.

A kopf daemon per VMPlacement compares the placement with the inventory whenever woken
(controllers/wakeups.py: its spec, its VMMigrations, a cordon, a change to its guests in
the inventory, the cluster's spec) with `plan_placement`; with policy enforce it creates
one VMMigration per drifted guest (never two at a time for one guest, never onto a node
cordoned by a NodeDrain, never beyond the flap guard; one still queued when its target gets
cordoned is withdrawn and waits). It never writes spec, so GitOps tools see no diff; it
writes status only when more than its sync time changed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from proxmigrate import metrics
from proxmigrate.api.constants import GROUP, VERSION, VMMIGRATIONS, VMPLACEMENTS
from proxmigrate.api.enums import PlacementPolicy
from proxmigrate.api.fields import SpecError
from proxmigrate.api.migration import migration_phase
from proxmigrate.api.placement import VMPlacementSpec
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.controllers import events
from proxmigrate.controllers.cache import Caches
from proxmigrate.controllers.children import (
    PLACEMENT_LABEL,
    child_name,
    child_vmid,
    migration_manifest,
    withdraw_onto,
)
from proxmigrate.controllers.context import (
    INVENTORY_MAX_AGE,
    ClusterContext,
    ClusterNotReady,
    cluster_context,
    cordoned_nodes,
)
from proxmigrate.controllers.reconcile import (
    STOP_GRACE_SECONDS,
    Reconciler,
    reconcile_until_stopped,
)
from proxmigrate.controllers.registry import registry_of
from proxmigrate.planning import (
    PlacementAction,
    PlacementDecision,
    PlacementRequest,
    PlanError,
    plan_placement,
)
from proxmigrate.runtime import placement_sync as sync

FINISHED_CHILDREN_KEPT = 10  # newest finished VMMigrations kept per placement, for history
FLAPPED_RETRY_SECONDS = 60.0  # a placement held back by its flap guard looks again this soon
UNWRITTEN = frozenset({"lastSyncTime"})  # changes that alone are not worth a status write

_out_of_sync: dict[tuple[str, str], bool] = {}  # (cluster label, placement key) -> drifted


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _export_out_of_sync(cluster: str, key: str, drifted: bool | None) -> None:
    if drifted is None:
        _out_of_sync.pop((cluster, key), None)
    else:
        _out_of_sync[(cluster, key)] = drifted
    total = sum(1 for (label, _), value in _out_of_sync.items() if label == cluster and value)
    metrics.PLACEMENTS_OUT_OF_SYNC.labels(cluster).set(total)


class PlacementReconciler(Reconciler):
    """One sync of one VMPlacement."""

    plural = VMPLACEMENTS

    async def run(self) -> None:
        now = _now()
        try:
            spec = VMPlacementSpec.from_spec(self.body.get("spec"))
        except SpecError as error:
            await self._invalid("InvalidSpec", str(error), now, degraded=True)
            return
        self.waker.cluster = spec.cluster_name
        self.waker.vmids = frozenset({spec.vmid}) if spec.vmid is not None else None
        self.waker.nodes = frozenset(spec.nodes)
        try:
            context = await cluster_context(
                self.caches, self.registry, self.namespace, spec.cluster_name
            )
        except ClusterNotReady as error:
            await self._invalid(error.reason, str(error), now, degraded=False)
            return
        drains = self.caches.drains(self.namespace)
        request = self._request(spec, context, drains)
        try:
            decisions = await self._decide(context, request)
        except PlanError as error:
            await self._invalid(
                "InvalidSelection", f"{error}; nothing is moved", now, degraded=True
            )
            _export_out_of_sync(context.label, f"{self.namespace}/{self.name}", None)
            return
        children = self.children(PLACEMENT_LABEL)
        withdrawn = withdraw_onto(children, request.cordoned, context.runtime)
        gone = {child["metadata"]["name"] for child in withdrawn}
        children = [child for child in children if child["metadata"]["name"] not in gone]
        outcome = await self._enforce(spec, decisions, children, now)
        status = sync.sync_status(
            decisions,
            spec.policy,
            outcome,
            self.status,
            {child["metadata"]["name"]: migration_phase(child).value for child in children},
            spec.flap_guard.window_seconds,
            self.generation,
            now,
        )
        _export_out_of_sync(context.label, f"{self.namespace}/{self.name}", not status["inSync"])
        await self._write(status)
        events.placement_transition(self.body, self.status, status, len(outcome.created))
        for child in withdrawn:
            await self.kube.delete(VMMIGRATIONS, self.namespace, child["metadata"]["name"])
        await self._prune(children)

    def _request(
        self,
        spec: VMPlacementSpec,
        context: ClusterContext,
        drains: Sequence[Mapping[str, Any]],
    ) -> PlacementRequest:
        settings = context.spec.placement
        return PlacementRequest(
            nodes=spec.nodes,
            vmid=spec.vmid,
            name=spec.name,
            selector=spec.selector,
            cordoned=cordoned_nodes(drains, spec.cluster_name),
            reserve=settings.memory_reserve(),
            anti_affinity_prefix=settings.anti_affinity_tag_prefix,
        )

    @staticmethod
    async def _decide(
        context: ClusterContext, request: PlacementRequest
    ) -> list[PlacementDecision]:
        """The decisions, with the local disks and devices of the guests to move known: PVE's
        precondition check is asked only for those (and kept per guest), never for guests
        in sync."""
        decisions = plan_placement(context.inventory, request)
        moving = {d.vmid for d in decisions if d.action is PlacementAction.MOVE}
        if not moving:
            return decisions
        inventory = await context.runtime.refresh_inventory(
            INVENTORY_MAX_AGE, local_for=lambda vm: vm.vmid in moving
        )
        return plan_placement(inventory, request)

    async def _enforce(
        self,
        spec: VMPlacementSpec,
        decisions: Sequence[PlacementDecision],
        children: Sequence[Mapping[str, Any]],
        now: datetime.datetime,
    ) -> sync.SyncOutcome:
        """Create a VMMigration for each drifted guest that has none in flight."""
        in_flight = {
            child_vmid(child): child["metadata"]["name"]
            for child in children
            if not migration_phase(child).is_final
        }
        if spec.policy is not PlacementPolicy.ENFORCE:
            return sync.SyncOutcome(in_flight=in_flight)
        guard = spec.flap_guard.guard()
        recent = sync.recent_migrations(self.status, spec.flap_guard.window_seconds, now)
        created: list[dict[str, Any]] = []
        flapped: list[int] = []
        for decision in decisions:
            if decision.action is not PlacementAction.MOVE or decision.vmid in in_flight:
                continue
            if not guard.allows(sync.migration_times(recent, decision.vmid), now.timestamp()):
                flapped.append(decision.vmid)
                continue
            name = await self._create_child(spec, decision, now)
            in_flight[decision.vmid] = name
            created.append(
                {
                    "name": name,
                    "vmid": decision.vmid,
                    "from": decision.current_node,
                    "to": decision.desired_node,
                    "time": to_rfc3339(now),
                    "phase": "Pending",
                }
            )
        if flapped:
            self.requeue_after = FLAPPED_RETRY_SECONDS
        return sync.SyncOutcome(in_flight=in_flight, created=created, flapped=flapped)

    async def _create_child(
        self, spec: VMPlacementSpec, decision: PlacementDecision, now: datetime.datetime
    ) -> str:
        assert decision.desired_node is not None
        name = child_name(self.name, f"{decision.vmid}-{int(now.timestamp())}")
        manifest = migration_manifest(
            owner=self.body,
            label_key=PLACEMENT_LABEL,
            cluster=spec.cluster_name,
            vmid=decision.vmid,
            target=decision.desired_node,
            source=decision.current_node,
            online=True,  # the runtime migrates stopped guests offline
            with_local_disks=decision.with_local_disks,
            name=name,
        )
        try:
            await self.create_child(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
        return name

    async def _prune(self, children: Sequence[Mapping[str, Any]]) -> None:
        """Delete finished VMMigrations beyond the newest FINISHED_CHILDREN_KEPT."""
        finished = sorted(
            (child for child in children if migration_phase(child).is_final),
            key=lambda child: child["metadata"].get("creationTimestamp", ""),
        )
        for child in finished[:-FINISHED_CHILDREN_KEPT]:
            await self.kube.delete(VMMIGRATIONS, self.namespace, child["metadata"]["name"])

    async def _invalid(
        self, reason: str, message: str, now: datetime.datetime, *, degraded: bool
    ) -> None:
        status = sync.invalid_status(
            self.status, reason, message, self.generation, now, degraded=degraded
        )
        await self._write(status)

    async def _write(self, status: Mapping[str, Any]) -> None:
        """Write the status when anything but its sync time changed: a placement at rest
        costs the API server nothing."""
        if any(
            self.status.get(key) != value for key, value in status.items() if key not in UNWRITTEN
        ):
            await self.write_status(status)


@kopf.daemon(
    GROUP,
    VERSION,
    VMPLACEMENTS,
    cancellation_backoff=STOP_GRACE_SECONDS,
    cancellation_timeout=5.0,
    backoff=5.0,
)
async def vm_placement(
    body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """Lives as long as the VMPlacement on the active replica and syncs it whenever woken.
    When it ends (deleted, or peering paused this replica) it leaves the out-of-sync count,
    after its last pass."""
    try:
        await reconcile_until_stopped(
            PlacementReconciler, body, Caches.of(kwargs), registry_of(memo), stopped
        )
    finally:
        key = f"{body.metadata['namespace']}/{body.metadata['name']}"
        for cluster in [label for label, placement in _out_of_sync if placement == key]:
            _export_out_of_sync(cluster, key, None)
