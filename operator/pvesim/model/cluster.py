"""The simulated cluster: state, event loop on simulated time, and PVE's API-level operations.

Pure: no I/O, no threads, no wall clock. Drive it with `advance_to(t)`; `next_event_time()`
tells when anything happens next (None when idle).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from pvesim.model.access import ROOT as ROOT
from pvesim.model.access import Access
from pvesim.model.datacenter import Datacenter
from pvesim.model.entities import VM, Node
from pvesim.model.errors import ApiError
from pvesim.model.events import EventQueue
from pvesim.model.faults import ApiFaults
from pvesim.model.migration import MigrationRecord, MigrationRequest, MigrationRun
from pvesim.model.network import Links
from pvesim.model.params import ModelParams
from pvesim.model.precondition import migrate_precondition
from pvesim.model.process import Command, Process, Sleep, SshCall, Worker
from pvesim.model.ssh_logins import SshLogins
from pvesim.model.sshd import SshTransport
from pvesim.model.tasklog import Stopping, Task
from pvesim.model.upid import Upid


class Cluster:
    def __init__(
        self,
        nodes: list[Node],
        vms: list[VM],
        *,
        seed: int = 0,
        params: ModelParams | None = None,
        datacenter: Datacenter | None = None,
    ) -> None:
        self.params = params or ModelParams()
        self.now = self.params.start_time
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.vms: dict[int, VM] = {v.vmid: v for v in vms}
        self.datacenter = datacenter or Datacenter()
        self.api_faults = ApiFaults()
        self.access = Access()  # users, tokens, ACLs (model/access.py)
        self.tasks: dict[str, Task] = {}
        self._queue = EventQueue()
        self._running_migrations: set[MigrationRun] = set()
        self.peak_inflight = 0
        self.migrations: dict[int, list[MigrationRecord]] = {}
        self.manual_moves: list[dict[str, Any]] = []
        self.api_requests: Counter[str] = Counter()
        self.ssh_transport: SshTransport | None = None  # real sshd (pvesim/openssh.py)
        self.logins = SshLogins(self)
        self.links = Links(self)
        from pvesim.model.ha import HaManager

        self.ha = HaManager(self)

    # -- simulated time ---------------------------------------------------------------------
    def next_event_time(self) -> float | None:
        return self._queue.next_time()

    def advance_to(self, t: float) -> None:
        """Process every event due at or before `t`, then set the clock to `t`."""
        while True:
            due = self._queue.next_time()
            if due is None or due > t:
                break
            at, callback, args = self._queue.pop()
            self.now = max(self.now, at)
            callback(*args)
        self.now = max(self.now, t)

    def run_until_idle(self, limit: float = 86_400.0) -> None:
        """Advance until nothing is pending or `limit` simulated seconds passed."""
        end = self.now + limit
        while (due := self._queue.next_time()) is not None and due <= end:
            self.advance_to(due)

    def schedule(self, delay: float, callback: Any, *args: Any) -> None:
        self._queue.push(self.now + max(0.0, delay), callback, *args)

    # -- processes --------------------------------------------------------------------------
    def spawn(self, task: Task, worker: Worker) -> None:
        """Run `worker` as `task`'s process (set before it starts), up to its first wait."""
        task.process = Process(worker, self._dispatch)
        task.process.start()

    def _dispatch(self, process: Process, command: Command, token: int) -> None:
        if isinstance(command, Sleep):
            self.schedule(command.seconds, process.wake, token, None)
        elif isinstance(command, SshCall):
            self.logins.connect(process, command, token)

    # -- insecure ports (docs/reference/proxmox.md#insecure-migration-ports) ----------------
    def allocate_port(self, node_name: str) -> int | None:
        node = self.nodes[node_name]
        net = self.params.network
        for port in range(net.insecure_port_first, net.insecure_port_end):
            if node.port_reserved_until.get(port, -1.0) > self.now:
                continue
            if port in node.ports_listening:
                continue
            node.port_reserved_until[port] = self.now + self.params.timing.port_reservation
            node.ports_listening.add(port)
            return port
        return None

    # -- tasks ------------------------------------------------------------------------------
    def new_task(self, node_name: str, task_type: str, ident: str, user: str) -> Task:
        node = self.nodes[node_name]
        upid = Upid(
            node_name, node.allocate_pid(), node.pstart, int(self.now), task_type, ident, user
        )
        task = Task(upid, self.now)
        self.tasks[str(upid)] = task
        return task

    def start_side_task(self, node_name: str, task_type: str, ident: str) -> Task:
        """A task another node's worker starts, e.g. the `qmstart` on the target."""
        return self.new_task(node_name, task_type, ident, ROOT)

    def task(self, upid: str) -> Task:
        try:
            return self.tasks[upid]
        except KeyError:
            raise ApiError(500, f"no such task '{upid}'") from None

    def stop_task(self, upid: str) -> Stopping:
        """`DELETE /nodes/{node}/tasks/{upid}`: SIGTERM, SIGKILL 5 s later (Task.stop)."""
        return self.task(upid).stop(lambda: self.now, self.schedule)

    # -- lookups ----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        if name not in self.nodes:
            raise ApiError(500, f"no such cluster node '{name}'")
        return self.nodes[name]

    def vm_on(self, node_name: str, vmid: int) -> VM:
        """PVE answers for VMs on the node named in the path only."""
        self.node(node_name)
        vm = self.vms.get(vmid)
        if vm is None or vm.node != node_name:
            raise ApiError(
                500,
                f"Configuration file 'nodes/{node_name}/qemu-server/{vmid}.conf' does not exist",
            )
        return vm

    def has_quorum(self) -> bool:
        online = sum(1 for n in self.nodes.values() if n.online)
        return online * 2 > len(self.nodes)

    # -- migration API (docs/reference/proxmox.md#api-refusals-before-a-task-exists) -------
    def migrate(
        self,
        node: str,
        vmid: int,
        target: str,
        *,
        user: str = ROOT,
        online: bool = False,
        force: bool | None = None,
        migration_type: str | None = None,
        migration_network: str | None = None,
        bwlimit: int | None = None,
        with_local_disks: bool = False,
        by_ha: bool = False,
    ) -> str:
        """`POST /nodes/{node}/qemu/{vmid}/migrate`; returns the UPID or raises ApiError.

        `by_ha`: called by an LRM worker (RPC environment type `ha`), which never takes the
        HA branch.
        """
        root_only = {
            "force": force,
            "migration_type": migration_type,
            "migration_network": migration_network,
        }
        errors = {
            k: "Only root may use this option."
            for k, v in root_only.items()
            if v and user != ROOT  # migrate_vm tests truth: `force=0` passes for anyone
        }
        if errors:
            raise ApiError.param(errors)
        if target == node:
            raise ApiError.param({"target": "target is local node."})
        vm = self.vm_on(node, vmid)
        if not self.has_quorum():
            raise ApiError(500, "cluster not ready - no quorum?")
        self.node(target)
        # qemu-server API2/Qemu.pm migrate_vm (PVE 8.3 and 9.x): check_lock, which `force`
        # does not skip (pve-guest-common AbstractConfig.pm check_lock), and the `--online`
        # check come before the HA branch, so an HA guest is refused here like any other.
        if vm.lock:
            raise ApiError(500, f"VM is locked ({vm.lock})")
        if vm.running and not online:
            raise ApiError(500, "can't migrate running VM without --online")
        if vm.ha_managed and not by_ha:  # HA/Config.pm vm_is_ha_managed: `ignored` is not
            return self.ha.request_via_task(vm, target, user)
        request = self.migration_request(
            vm,
            target,
            migration_type=migration_type,
            migration_network=migration_network,
            bwlimit=bwlimit,
            with_local_disks=with_local_disks,
            user=user,
            by_ha=by_ha,
        )
        return str(self.start_migration(request, user).upid)

    def migration_request(
        self,
        vm: VM,
        target: str,
        *,
        migration_type: str | None = None,
        migration_network: str | None = None,
        bwlimit: int | None = None,
        with_local_disks: bool = False,
        user: str = ROOT,
        by_ha: bool = False,
    ) -> MigrationRequest:
        """Moving `vm` to `target`; options not given fall back to datacenter.cfg."""
        dc = self.datacenter
        limit = bwlimit
        # pve-storage PVE/Storage.pm get_bandwidth_limit (via pve-guest-common
        # AbstractMigrate.pm get_bwlimit, no storages for the memory transfer): a requested
        # limit replaces the datacenter's when the user has Sys.Modify on / (who may edit
        # datacenter.cfg); otherwise the lower one applies.
        if bwlimit is None or not self.access.has(user, "/", ["Sys.Modify"]):
            limits = [x for x in (bwlimit, dc.bwlimit_migration_kib) if x]
            limit = min(limits) if limits else None
        return MigrationRequest(
            vmid=vm.vmid,
            source=vm.node,
            target=target,
            online=vm.running,
            secure=(migration_type or dc.migration_type) == "secure",
            network=migration_network or dc.migration_network,
            bwlimit_kib=limit,
            with_local_disks=with_local_disks,
            by_ha=by_ha,
        )

    def start_migration(self, request: MigrationRequest, user: str) -> Task:
        vm = self.vms[request.vmid]
        task = self.new_task(request.source, "qmigrate", str(vm.vmid), user)
        if vm.migrating:
            self.spawn(task, self._lock_timeout(task, vm.vmid))
            return task
        vm.migrating = True
        run = MigrationRun(self, task, vm, request)
        self.migrations.setdefault(vm.vmid, []).append(run.record)
        self._running_migrations.add(run)
        self.peak_inflight = max(self.peak_inflight, len(self._running_migrations))
        self.spawn(task, run.run())
        return task

    def _lock_timeout(self, task: Task, vmid: int) -> Worker:
        yield Sleep(self.params.timing.migration_lock_timeout)
        task.finish(
            self.now, f"can't lock file '/var/lock/pve-manager/pve-migrate-{vmid}' - got timeout"
        )

    def on_migration_end(self, run: MigrationRun) -> None:
        self._running_migrations.discard(run)

    def move_config(self, vm: VM, target: str) -> None:
        vm.node = target

    def migrate_precondition(self, node: str, vmid: int) -> dict[str, Any]:
        """`GET /nodes/{node}/qemu/{vmid}/migrate`, PVE 8 or 9 shape (model/precondition.py)."""
        return migrate_precondition(self, self.vm_on(node, vmid))

    def migrateall(
        self,
        node: str,
        target: str,
        *,
        user: str = ROOT,
        maxworkers: int | None = None,
        vms: list[int] | None = None,
        with_local_disks: bool | None = None,
    ) -> str:
        """`POST /nodes/{node}/migrateall` (docs/reference/proxmox.md#migrateall)."""
        from pvesim.model.bulk import migrateall_worker

        if target == node:
            raise ApiError.param({"target": "target is local node."})
        self.node(node)
        if not self.has_quorum():
            raise ApiError(500, "cluster not ready - no quorum?")
        self.node(target)
        workers = maxworkers or self.datacenter.max_workers
        if not workers:
            raise ApiError(
                500, "either 'maxworkers' parameter or max_workers in datacenter.cfg must be set!"
            )
        task = self.new_task(node, "migrateall", "", user)
        worker = migrateall_worker(self, task, node, target, workers, vms, with_local_disks, user)
        self.spawn(task, worker)
        return str(task.upid)

    # -- faults -----------------------------------------------------------------------------
    def set_node_online(self, name: str, online: bool) -> None:
        self.node(name).online = online

    def set_lock(self, vmid: int, lock: str | None) -> None:
        self.vms[vmid].lock = lock

    def move_by_hand(self, vmid: int, target: str) -> None:
        """Drift: someone moved the VM outside the operator (no task on record)."""
        vm = self.vms[vmid]
        self.node(target)
        self.manual_moves.append({"vmid": vmid, "from": vm.node, "to": target, "at": self.now})
        vm.node = target

    # -- ground truth -----------------------------------------------------------------------
    def ground_truth(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "placement": {str(v.vmid): v.node for v in self.vms.values()},
            "locks": {str(v.vmid): v.lock for v in self.vms.values() if v.lock},
            "migrations": {
                str(vmid): [vars(r) | {"ssh_connections": list(r.ssh_connections)} for r in recs]
                for vmid, recs in self.migrations.items()
            },
            "ssh": {
                n.name: {
                    "connections": n.sshd.connections,
                    "drops": n.sshd.drops,
                    "refused_by_penalty": n.sshd.refusals,
                    "peak_preauth": n.sshd.peak_pending,
                    "pending_preauth": n.sshd.pending,
                    "max_startups": str(n.sshd.params.max_startups),
                }
                for n in self.nodes.values()
            },
            "inflight_migrations": len(self._running_migrations),
            "peak_inflight_migrations": self.peak_inflight,
            "manual_moves": list(self.manual_moves),
            "nodes_offline": [n.name for n in self.nodes.values() if not n.online],
            "api_requests": dict(self.api_requests),
            "api_faults": self.api_faults.as_dict(),
        }
