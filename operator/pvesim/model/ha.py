"""PVE HA: `hamigrate` only queues a request; the CRM and the LRMs do the move later (§5)."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from pvesim.model.cluster import ROOT
from pvesim.model.errors import ApiError
from pvesim.model.process import Sleep, Worker

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM
    from pvesim.model.migration import MigrationRun
    from pvesim.model.tasklog import Task


class HaManager:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        interval = cluster.params.timing.ha_crm_interval
        self.crm_phase = cluster.rng.uniform(0.0, interval)  # loops run unsynchronised
        self.lrm_phase = {n: cluster.rng.uniform(0.0, interval) for n in cluster.nodes}
        self.requests: dict[int, str] = {}  # vmid -> requested node, awaiting the CRM
        self.lrm_queue: dict[str, deque[tuple[int, str]]] = {n: deque() for n in cluster.nodes}
        self.lrm_running: dict[str, int] = {n: 0 for n in cluster.nodes}
        self.migrating: dict[int, str] = {}  # vmid -> target while state is `migrate`
        self._crm_tick_at: float | None = None
        self._lrm_tick_at: dict[str, float | None] = {n: None for n in cluster.nodes}

    # -- API side -------------------------------------------------------------------------
    def request(self, vmid: int, target: str) -> None:
        """`POST /cluster/ha/resources/vm:N/migrate` (and what `hamigrate` runs)."""
        vm = self.cluster.vms.get(vmid)
        if vm is None or not vm.ha_managed:
            raise ApiError(500, f"service 'vm:{vmid}' is not under HA control")
        self.cluster.node(target)
        self.requests[vmid] = target
        self._schedule_crm()

    def request_via_task(self, vm: VM, target: str, user: str) -> str:
        task = self.cluster.new_task(vm.node, "hamigrate", str(vm.vmid), user)
        self.cluster.spawn(task, self._hamigrate(task, vm, target))
        return str(task.upid)

    def _hamigrate(self, task: Task, vm: VM, target: str) -> Worker:
        task.raw(f"Requesting HA migration for VM {vm.vmid} to node {target}")
        self.request(vm.vmid, target)
        yield Sleep(self.cluster.params.timing.hamigrate_duration)
        task.finish(self.cluster.now)  # ends OK before the VM moves (§5)

    # -- loops ------------------------------------------------------------------------------
    def _next_tick(self, phase: float, interval: float) -> float:
        """The first loop tick strictly after now (a tick at now has run already).

        Computed without an epsilon: at epoch-sized clocks (~1.7e9 s) a fixed 1e-9 margin is
        below float resolution and a tick could be rescheduled at the same instant forever.
        """
        now = self.cluster.now
        at = phase + (math.floor((now - phase) / interval) + 1) * interval
        return at if at > now else at + interval

    def _schedule_crm(self) -> None:
        if self._crm_tick_at is not None:
            return
        interval = self.cluster.params.timing.ha_crm_interval
        self._crm_tick_at = self._next_tick(self.crm_phase, interval)
        self.cluster.schedule(self._crm_tick_at - self.cluster.now, self._crm_tick)

    def _crm_tick(self) -> None:
        self._crm_tick_at = None
        for vmid, target in sorted(self.requests.items()):
            vm = self.cluster.vms[vmid]
            if vmid in self.migrating or vm.node == target:
                continue
            self.migrating[vmid] = target
            self.lrm_queue[vm.node].append((vmid, target))
            self._schedule_lrm(vm.node)
        self.requests.clear()

    def _schedule_lrm(self, node: str) -> None:
        if self._lrm_tick_at[node] is not None:
            return
        interval = self.cluster.params.timing.ha_lrm_interval
        at = self._next_tick(self.lrm_phase[node], interval)
        self._lrm_tick_at[node] = at
        self.cluster.schedule(at - self.cluster.now, self._lrm_tick, node)

    def _lrm_tick(self, node: str) -> None:
        self._lrm_tick_at[node] = None
        queue = self.lrm_queue[node]
        limit = self.cluster.params.timing.ha_lrm_max_workers
        while queue and self.lrm_running[node] < limit:
            vmid, target = queue.popleft()
            vm = self.cluster.vms[vmid]
            request = self.cluster.migration_request(vm, target, by_ha=True)
            self.lrm_running[node] += 1
            self.cluster.start_migration(request, ROOT)
        if queue:
            self._schedule_lrm(node)

    def on_migration_end(self, run: MigrationRun) -> None:
        if not run.req.by_ha:
            return
        self.lrm_running[run.req.source] -= 1
        self.migrating.pop(run.vm.vmid, None)
        if self.lrm_queue[run.req.source]:
            self._schedule_lrm(run.req.source)

    # -- views ------------------------------------------------------------------------------
    def resources(self) -> list[dict[str, Any]]:
        """`GET /cluster/ha/resources`."""
        return [
            {
                "sid": f"vm:{vm.vmid}",
                "type": "vm",
                "state": "started",
                "max_restart": 1,
                "max_relocate": 1,
                "digest": f"{vm.vmid:040x}",
            }
            for vm in self.cluster.vms.values()
            if vm.ha_managed
        ]

    def status_current(self) -> list[dict[str, Any]]:
        """`GET /cluster/ha/status/current`."""
        cluster = self.cluster
        first = next(iter(cluster.nodes))
        entries: list[dict[str, Any]] = [
            {
                "id": "quorum",
                "type": "quorum",
                "node": first,
                "quorate": int(cluster.has_quorum()),
                "status": "OK" if cluster.has_quorum() else "No quorum on node '" + first + "'!",
            },
            {
                "id": "master",
                "type": "master",
                "node": first,
                "status": f"{first} (active, {int(cluster.now)})",
                "timestamp": int(cluster.now),
            },
        ]
        for node in cluster.nodes.values():
            state = "active" if node.online else "old timestamp - dead?"
            entries.append(
                {
                    "id": f"lrm:{node.name}",
                    "type": "lrm",
                    "node": node.name,
                    "status": f"{node.name} ({state}, {int(cluster.now)})",
                    "timestamp": int(cluster.now),
                }
            )
        for vm in cluster.vms.values():
            if not vm.ha_managed:
                continue
            state = "migrate" if vm.vmid in self.migrating else "started"
            entries.append(
                {
                    "id": f"service:vm:{vm.vmid}",
                    "sid": f"vm:{vm.vmid}",
                    "type": "service",
                    "node": vm.node,
                    "state": state,
                    "crm_state": state,
                    "request_state": "started",
                    "max_restart": 1,
                    "max_relocate": 1,
                    "status": f"vm:{vm.vmid} ({vm.node}, {state})",
                }
            )
        return entries
