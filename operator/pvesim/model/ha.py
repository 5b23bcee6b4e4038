"""PVE's HA stack on the migration path (pve-ha-manager, PVE 8.3 and 9.x).

`POST .../qemu/{vmid}/migrate` for an HA-managed guest forks a `hamigrate` worker that runs
`ha-manager migrate vm:N <node>`, which only appends a command to `crm_commands` (qemu-server
`API2/Qemu.pm` migrate_vm; pve-ha-manager `API2/HA/Resources.pm` migrate). The CRM reads it on
its next 10 s round and accepts it (service state `migrate`) or drops it with a syslog line
(`HA/Manager.pm` update_crm_commands). The source node's LRM then forks a worker per service in
`migrate`, at most `max_workers` at once (`HA/LRM.pm` run_workers), which calls migrate_vm as
the HA agent: the `qmigrate` task. A refusal anywhere after the `hamigrate` task creates no
task; it is visible only as the service state (`hastate`) staying or going back to `started`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from pvesim.model.errors import ApiError
from pvesim.model.process import Sleep, Worker

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM
    from pvesim.model.tasklog import Task

# HA/LRM.pm run_workers: reap finished workers and start queued ones every second
# (`$haenv->sleep(1)`) for at most 8 s of each 10 s LRM round.
LRM_WORKER_POLL = 1.0
LRM_WORKER_WINDOW = 8.0
# HA/Env/PVE2.pm get_max_workers: `$datacenterconfig->{max_workers} || 4`.
LRM_DEFAULT_MAX_WORKERS = 4
# HA/LRM.pm run_workers: a worker that dies exits with POSIX::_exit(-1), i.e. 255.
LRM_WORKER_DIED = 255
LRM_NOT_MOVED = 1  # HA/Tools.pm ERROR: exec_resource_agent "service ... not moved"


class HaManager:
    """The CRM (one, cluster-wide) and an LRM per node, for `vm:N` services."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        interval = cluster.params.timing.ha_crm_interval
        self.crm_phase = cluster.rng.uniform(0.0, interval)  # loops run unsynchronised
        self.lrm_phase = {n: cluster.rng.uniform(0.0, interval) for n in cluster.nodes}
        self.commands: list[tuple[int, str]] = []  # the `crm_commands` file: (vmid, node)
        self.migrating: dict[int, str] = {}  # vmid -> target while the CRM state is `migrate`
        self.lrm_queue: dict[str, deque[int]] = {n: deque() for n in cluster.nodes}
        self.lrm_workers: dict[str, dict[int, str | None]] = {n: {} for n in cluster.nodes}
        self.results: dict[int, int] = {}  # vmid -> LRM exit code, not yet read by the CRM
        self.journal: list[str] = []  # what the CRM and LRMs log to syslog (nothing else shows it)
        self._crm_at: float | None = None
        self._lrm_at: dict[str, float | None] = {n: None for n in cluster.nodes}
        self._lrm_busy: dict[str, bool] = {n: False for n in cluster.nodes}  # in run_workers

    # -- API side -------------------------------------------------------------------------
    def request(self, sid: str, node: str) -> dict[str, Any] | None:
        """`POST /cluster/ha/resources/{sid}/migrate` (API2/HA/Resources.pm migrate), also what
        `ha-manager migrate` runs. The target is not checked here: the CRM drops the command
        if it is not an online node. PVE 8 returns null, PVE 9 the motion info (its
        `comigrated-resources`/`blocking-resources` only when non-empty: no rules here)."""
        vmid = self._parse_sid(sid)
        vm = self.cluster.vms.get(vmid)
        if vm is None or not vm.ha_managed:  # HA/Config.pm service_is_ha_managed
            raise ApiError(500, f"resource 'vm:{vmid}' is not HA managed")
        self.commands.append((vmid, node))
        self._schedule_crm()
        if self.cluster.params.pve_version >= 9:
            return {"sid": f"vm:{vmid}", "requested-node": node}
        return None

    def _parse_sid(self, sid: str) -> int:
        """HA/Config.pm parse_sid: `vm:N`, or a bare VMID of an existing guest."""
        kind, colon, name = sid.partition(":")
        if not colon:
            if sid.isdigit() and int(sid) in self.cluster.vms:
                return int(sid)
            if sid.isdigit():
                raise ApiError(500, f"unable to detect SID from VMID - VM/CT {sid} does not exist")
            raise ApiError(500, f"unable to parse service id '{sid}'")
        if kind != "vm" or not name.isdigit():
            raise ApiError(500, f"resource '{sid}' is not HA managed")
        return int(name)

    def request_via_task(self, vm: VM, target: str, user: str) -> str:
        """The HA branch of qemu-server migrate_vm: a `hamigrate` task on the source."""
        task = self.cluster.new_task(vm.node, "hamigrate", str(vm.vmid), user)
        self.cluster.spawn(task, self._hamigrate(task, vm.vmid, target))
        return str(task.upid)

    def _hamigrate(self, task: Task, vmid: int, target: str) -> Worker:
        # `print` in the worker: an untimestamped line (pve-common RESTEnvironment fork_worker)
        task.raw(f"Requesting HA migration for VM {vmid} to node {target}")
        yield Sleep(self.cluster.params.timing.hamigrate_duration)  # `ha-manager` start-up
        self.request(f"vm:{vmid}", target)
        task.finish(self.cluster.now)  # ends OK as soon as the command is queued

    # -- CRM ------------------------------------------------------------------------------
    def _next_tick(self, phase: float, interval: float) -> float:
        """The first loop tick strictly after now (a tick at now has run already).

        Computed without an epsilon: at epoch-sized clocks (~1.7e9 s) a fixed 1e-9 margin is
        below float resolution and a tick could be rescheduled at the same instant forever.
        """
        now = self.cluster.now
        at = phase + (math.floor((now - phase) / interval) + 1) * interval
        return at if at > now else at + interval

    def _schedule_crm(self) -> None:
        if self._crm_at is not None:
            return
        self._crm_at = self._next_tick(self.crm_phase, self.cluster.params.timing.ha_crm_interval)
        self.cluster.schedule(self._crm_at - self.cluster.now, self._crm_round)

    def _log(self, daemon: str, message: str) -> None:
        self.journal.append(f"{int(self.cluster.now)} {daemon}: {message}")

    def _crm_round(self) -> None:
        """HA/Manager.pm manage: LRM results first, then the queued commands."""
        self._crm_at = None
        for vmid, code in sorted(self.results.items()):
            target = self.migrating.pop(vmid)
            node = target if code == 0 else self.cluster.vms[vmid].node
            if code:  # next_state_migrate_relocate: back to `started` on the old node
                self._log(
                    "pve-ha-crm", f"service 'vm:{vmid}' - migration failed (exit code {code})"
                )
            self._log(
                "pve-ha-crm",
                f"service 'vm:{vmid}': state changed from 'migrate' to 'started'  (node = {node})",
            )
        self.results.clear()
        for vmid, node in self.commands:
            self._crm_command(vmid, node)
        self.commands.clear()
        if self.migrating:
            self._schedule_crm()  # waits for the LRMs' results

    def _crm_command(self, vmid: int, node: str) -> None:
        """update_crm_commands and next_state_started for `migrate vm:N node`."""
        command = f"migrate vm:{vmid} {node}"
        vm = self.cluster.vms.get(vmid)
        target = self.cluster.nodes.get(node)
        if vm is None or not vm.ha_managed:
            self._log("pve-ha-crm", f"crm command error - no such service: {command}")
        elif target is None or not target.online:
            self._log("pve-ha-crm", f"crm command error - node not online: {command}")
        elif node == vm.node:
            self._log(
                "pve-ha-crm", f"ignore crm command - service already on target node: {command}"
            )
        elif vmid in self.migrating:  # kept as the service's `cmd` until it is `started` again
            self.commands.append((vmid, node))
        else:
            self._log("pve-ha-crm", f"got crm command: {command}")
            self._log("pve-ha-crm", f"migrate service 'vm:{vmid}' to node '{node}'")
            self._log(
                "pve-ha-crm",
                f"service 'vm:{vmid}': state changed from 'started' to 'migrate'  "
                f"(node = {vm.node}, target = {node})",
            )
            self.migrating[vmid] = node
            self._schedule_lrm(vm.node)

    # -- LRM ------------------------------------------------------------------------------
    def _schedule_lrm(self, node: str) -> None:
        """The LRM's next round; none while run_workers runs, which asks for one at its end."""
        if self._lrm_at[node] is not None or self._lrm_busy[node]:
            return
        at = self._next_tick(self.lrm_phase[node], self.cluster.params.timing.ha_lrm_interval)
        self._lrm_at[node] = at
        self.cluster.schedule(at - self.cluster.now, self._lrm_round, node)

    def _lrm_round(self, node: str) -> None:
        """HA/LRM.pm manage_resources: queue a worker for each service of this node in
        `migrate` that has none and no unread result, then run_workers."""
        self._lrm_at[node] = None
        for vmid in self._unqueued(node):
            self.lrm_queue[node].append(vmid)
        self._lrm_busy[node] = True
        self._run_workers(node, self.cluster.now)

    def _unqueued(self, node: str) -> list[int]:
        """Services of `node` in `migrate` without a worker, a queue entry or a result."""
        workers, queue = self.lrm_workers[node], self.lrm_queue[node]
        return [
            vmid
            for vmid in sorted(self.migrating)
            if self.cluster.vms[vmid].node == node
            and vmid not in workers
            and vmid not in queue
            and vmid not in self.results
        ]

    def _run_workers(self, node: str, round_start: float) -> None:
        """One pass of run_workers' loop: reap ended workers, start queued ones up to
        max_workers; again in a second while workers run and the 8 s window lasts."""
        workers = self.lrm_workers[node]
        for vmid, upid in list(workers.items()):
            task = self.cluster.tasks.get(upid) if upid else None
            if task is None or not task.running:
                del workers[vmid]
                self._worker_finished(vmid, died=task is None)
        limit = self.cluster.datacenter.max_workers or LRM_DEFAULT_MAX_WORKERS
        queue = self.lrm_queue[node]
        while queue and len(workers) < limit:
            vmid = queue.popleft()
            workers[vmid] = self._start_worker(node, vmid)
        if workers and self.cluster.now + LRM_WORKER_POLL - round_start <= LRM_WORKER_WINDOW:
            self.cluster.schedule(LRM_WORKER_POLL, self._run_workers, node, round_start)
            return
        self._lrm_busy[node] = False  # `last if !$count`, or the 8 s are over
        if workers or queue or self._unqueued(node):
            self._schedule_lrm(node)

    def _start_worker(self, node: str, vmid: int) -> str | None:
        """exec_resource_agent `migrate` (Resources/PVEVM.pm migrate): migrate_vm as the HA
        agent with `force => 1, 'with-local-disks' => 1, online => 1`, as root@pam. An API
        refusal (lock, storage, ...) kills the worker before any task exists: None."""
        from pvesim.model.cluster import ROOT

        target = self.migrating[vmid]
        try:
            return self.cluster.migrate(
                node,
                vmid,
                target,
                user=ROOT,
                online=True,
                force=True,
                with_local_disks=True,
                by_ha=True,
            )
        except ApiError as error:
            self._log("pve-ha-lrm", error.message)
            return None

    def _worker_finished(self, vmid: int, died: bool) -> None:
        """resource_command_finished: the exit code goes to the CRM with the LRM status."""
        moved = self.cluster.vms[vmid].node == self.migrating[vmid]  # PVEVM.pm: old config gone
        if not moved and not died:
            self._log("pve-ha-lrm", f"service vm:{vmid} not moved (migration error)")
        self.results[vmid] = LRM_WORKER_DIED if died else (0 if moved else LRM_NOT_MOVED)
        self._schedule_crm()

    # -- views ------------------------------------------------------------------------------
    def hastate(self, vm: VM) -> str | None:
        """`hastate` of `/cluster/resources` (pve-manager API2/Cluster.pm resources): the
        CRM's service state, else the configured state (`ignored` services leave the CRM's
        state, Manager.pm manage); None for guests that are no HA resource."""
        if vm.ha_state is None or not vm.ha_managed:
            return vm.ha_state
        return "migrate" if vm.vmid in self.migrating else vm.ha_state

    def service_status(self, vm: VM) -> dict[str, Any]:
        """`ha` of `.../status/current` (HA/Config.pm get_service_status)."""
        if not vm.ha_managed:
            return {"managed": 0}
        return {"managed": 1, "state": self.hastate(vm)}

    def resources(self) -> list[dict[str, Any]]:
        """`GET /cluster/ha/resources`."""
        return [
            {
                "sid": f"vm:{vm.vmid}",
                "type": "vm",
                "state": vm.ha_state,
                "max_restart": 1,
                "max_relocate": 1,
                "digest": f"{vm.vmid:040x}",
            }
            for vm in self.cluster.vms.values()
            if vm.ha_state is not None
        ]

    def status_current(self) -> list[dict[str, Any]]:
        """`GET /cluster/ha/status/current` (API2/HA/Status.pm status)."""
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
            lrm = "active" if node.online else "old timestamp - dead?"
            entries.append(
                {
                    "id": f"lrm:{node.name}",
                    "type": "lrm",
                    "node": node.name,
                    "status": f"{node.name} ({lrm}, {int(cluster.now)})",
                    "timestamp": int(cluster.now),
                }
            )
        for vm in cluster.vms.values():
            state = self.hastate(vm)
            if state is None:
                continue
            entry: dict[str, Any] = {
                "id": f"service:vm:{vm.vmid}",
                "sid": f"vm:{vm.vmid}",
                "type": "service",
                "node": vm.node,
                "state": state,
                "request_state": vm.ha_state,
                "max_restart": 1,
                "max_relocate": 1,
                "status": f"vm:{vm.vmid} ({vm.node}, {state})",
            }
            if vm.ha_managed:  # ignored services are not in the CRM's service status
                entry["crm_state"] = state
            entries.append(entry)
        return entries
