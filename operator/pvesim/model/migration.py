"""One `qmigrate` worker: PVE's phases, SSH connections and log lines.

Sources: docs/reference/proxmox.md #ssh-connections-of-one-migration, #ram-transfer,
#task-log-wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pvesim.model.network import Stream
from pvesim.model.process import Interrupted, Sleep, SshCall, SshResult, Worker
from pvesim.model.tasklog import Task, duration, render_bytes

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM


class StepFailed(Exception):
    """A phase failed; `reason` is the ground-truth label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass
class MigrationRequest:
    vmid: int
    source: str
    target: str
    online: bool
    secure: bool = True
    network: str | None = None  # migration network CIDR
    bwlimit_kib: int | None = None
    with_local_disks: bool = False
    by_ha: bool = False


@dataclass
class MigrationRecord:
    """Ground truth about one executed migration."""

    upid: str
    vmid: int
    source: str
    target: str
    mode: str  # secure | insecure | offline
    start: float
    end: float | None = None
    outcome: str | None = None  # ok | failed | problems
    reason: str | None = None
    vm_moved: bool = False
    transfer_start: float | None = None  # RAM stream open ...
    transfer_end: float | None = None  # ... and closed
    ssh_connections: list[str] = field(default_factory=list)


class MigrationRun:
    """The worker body of one migration task."""

    def __init__(self, cluster: Cluster, task: Task, vm: VM, request: MigrationRequest) -> None:
        self.cluster = cluster
        self.task = task
        self.vm = vm
        self.req = request
        self.started = cluster.now
        self.stream: Stream | None = None
        self.port: int | None = None
        mode = "offline" if not request.online else ("secure" if request.secure else "insecure")
        self.record = MigrationRecord(
            str(task.upid), vm.vmid, request.source, request.target, mode, cluster.now
        )

    # -- helpers ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.task.log(self.cluster.now, message)

    def ssh(self, command: str) -> SshCall:
        self.record.ssh_connections.append(command)
        return SshCall(self.req.source, self.req.target, command)

    @property
    def target_ip(self) -> str:
        node = self.cluster.nodes[self.req.target]
        return node.migration_ip if self.req.network else node.ip

    def ssh_prefix(self) -> str:
        return (
            f"/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={self.req.target}' "
            f"root@{self.target_ip}"
        )

    def elapsed(self) -> str:
        return duration(self.cluster.now - self.started)

    def finish(self, outcome: str, reason: str, error: str | None) -> None:
        self.record.end = self.cluster.now
        self.record.outcome = outcome
        self.record.reason = reason
        self.record.vm_moved = self.vm.node == self.req.target
        self.vm.migrating = False
        self.task.finish(self.cluster.now, error)
        self.cluster.on_migration_end(self)

    # -- the worker ------------------------------------------------------------------------
    def run(self) -> Worker:
        try:
            yield from self.prepare()
        except (StepFailed, Interrupted) as exc:
            message = exc.message if isinstance(exc, StepFailed) else str(exc)
            reason = exc.reason if isinstance(exc, StepFailed) else "stopped"
            self.log(f"ERROR: migration aborted (duration {self.elapsed()}): {message}")
            self.finish("failed", reason, "migration aborted")
            return
        self.vm.lock = "migrate"  # phase1 sets `lock: migrate` in the config
        if not self.req.online:
            yield from self.phase3(live=False)
            return
        try:
            yield from self.phase2()
        except (StepFailed, Interrupted) as exc:
            message = exc.message if isinstance(exc, StepFailed) else str(exc)
            reason = exc.reason if isinstance(exc, StepFailed) else "stopped"
            yield from self.phase2_cleanup(message)
            self.finish("failed", reason, "migration problems")
            return
        yield from self.phase3(live=True)

    def prepare(self) -> Worker:
        cluster, req, vm = self.cluster, self.req, self.vm
        if req.by_ha:  # printed untimestamped (pve-common RESTEnvironment.pm fork_worker)
            self.task.raw("task started by HA resource agent")
        if not vm.running:
            self.task.raw("VM isn't running. Doing offline migration instead.")
        elif cluster.params.pve_version >= 9:
            self.log(
                "conntrack state migration not supported or disabled, "
                "active connections might get dropped"
            )
        yield Sleep(cluster.params.timing.api_worker_start)
        if req.network:
            cmd = f"pvecm mtunnel -migration_network {req.network} -get_migration_ip"
            result: SshResult = yield self.ssh(cmd)
            if not result.ok:
                raise StepFailed(
                    f"command '{self.ssh_prefix()} {cmd}' failed: exit code 255",
                    "ssh_drop:get_migration_ip",
                )
            yield Sleep(cluster.params.timing.short_command)
        node = cluster.nodes[req.target]
        self.log(f"starting migration of VM {vm.vmid} to node '{req.target}' ({node.ip})")
        if vm.lock:
            raise StepFailed(f"VM is locked ({vm.lock})", f"locked:{vm.lock}")
        if vm.local_devices and vm.running:
            devices = ", ".join(vm.local_devices)
            raise StepFailed(
                f"can't migrate VM which uses local devices: {devices}", "local_devices"
            )
        for _ in range(2 if req.network else 1):
            result = yield self.ssh("/bin/true")
            if not result.ok:
                for line in result.stderr:
                    self.log(line)
                raise StepFailed(
                    "Can't connect to destination address using public key", "ssh_drop:/bin/true"
                )
            yield Sleep(cluster.params.timing.bin_true)
        if vm.local_disks and not req.with_local_disks:
            for disk in vm.local_disks:
                self.log(
                    f"ERROR: can't migrate local disk '{disk.volid}': can't live migrate "
                    "attached local disks without with-local-disks option"
                )
            message = "Problem found while scanning volumes - can't migrate VM - check log"
            self.log(f"ERROR: {message}")
            raise StepFailed(message, "local_disks")

    def phase2(self) -> Worker:
        cluster, req, vm = self.cluster, self.req, self.vm
        timing = cluster.params.timing
        self.log(f"starting VM {vm.vmid} on remote node '{req.target}'")
        result: SshResult = yield self.ssh(f"qm start {vm.vmid}")
        if not result.ok:
            for line in result.stderr:
                self.log(f"[{req.target}] {line}")
            raise StepFailed("remote command failed with exit code 255", "ssh_drop:qm start")
        qmstart = cluster.start_side_task(req.target, "qmstart", str(vm.vmid))
        yield Sleep(cluster.rng.uniform(timing.qm_start_min, timing.qm_start_max))
        if not req.secure:
            self.port = cluster.allocate_port(req.target)
            if self.port is None:
                first, end = (
                    cluster.params.network.insecure_port_first,
                    cluster.params.network.insecure_port_end,
                )
                message = f"unable to find free port ({first}-{end})"
                self.log(f"[{req.target}] {message}")
                qmstart.finish(cluster.now, message)
                raise StepFailed("remote command failed with exit code 255", "port_exhausted")
        qmstart.finish(cluster.now)
        self.log("start remote tunnel")
        result = yield self.ssh("qm mtunnel")
        if not result.ok:
            for line in result.stderr:
                self.task.raw(line)
            raise StepFailed("can't open tunnel - no reply", "ssh_drop:mtunnel")
        yield Sleep(timing.tunnel_setup)
        self.log("ssh tunnel ver 1")
        uri = (
            f"unix:/run/qemu-server/{vm.vmid}.migrate"
            if req.secure
            else f"tcp:{self.target_ip}:{self.port}"
        )
        self.log(f"starting online/live migration on {uri}")
        self.log("set migration capabilities")
        net = cluster.params.network
        cap = net.qemu_default_max_bandwidth
        if req.bwlimit_kib:
            cap = req.bwlimit_kib * 1024.0
            self.log(f"migration speed limit: {render_bytes(cap)}/s")
        if req.secure:
            cap = min(cap, net.secure_stream_cap)
        downtime_ms = timing.downtime_limit * 1000
        self.log(f"migration downtime limit: {int(downtime_ms)} ms")
        cachesize = 1 << max(0, (vm.maxmem // 10 - 1).bit_length())  # round_powerof2: up
        self.log(f"migration cachesize: {render_bytes(cachesize)}")
        self.log("set migration parameters")
        self.log(f"start migrate command to {uri}")
        if self.port is not None:
            cluster.nodes[req.target].ports_listening.discard(self.port)
        self.stream = cluster.open_stream(req.source, req.target, cap)
        self.record.transfer_start = cluster.now
        yield from self.transfer_memory(downtime_ms)

    def transfer_memory(self, downtime_ms: float) -> Worker:
        """Pre-copy until the rest fits the downtime limit, then stop-and-copy (#ram-transfer)."""
        cluster, vm = self.cluster, self.vm
        assert self.stream is not None
        stream = self.stream
        poll = cluster.params.timing.poll_interval
        begin = cluster.now
        remaining = float(vm.mem)
        sent_before = 0.0
        last_rem: float | None = None
        stalled_polls = 0
        next_log = begin + poll
        last = begin
        while True:
            rate, dirty, limit = stream.rate, vm.dirty_rate, downtime_ms / 1000
            wait = poll
            if rate > dirty:
                wait = min(wait, max(0.0, (remaining - limit * rate) / (rate - dirty)))
            yield Sleep(max(wait, 1e-3) if remaining > limit * rate else 0.0)
            now = cluster.now
            sent = cluster.stream_sent(stream)
            remaining = min(float(vm.mem), remaining - (sent - sent_before) + dirty * (now - last))
            sent_before, last = sent, now
            if remaining <= limit * stream.rate * (1 + 1e-6) + 1.0:
                break
            if now + 1e-9 < next_log:
                continue
            next_log = now + poll
            progress = (
                f"migration active, transferred {render_bytes(sent)} of "
                f"{render_bytes(vm.maxmem)} VM-state, {render_bytes(stream.rate)}/s"
            )
            if dirty > stream.rate:
                progress += f", VM dirties lots of memory: {render_bytes(dirty)}/s"
            self.log(progress)
            if last_rem is not None and remaining >= last_rem:
                stalled_polls += 1  # "remaining memory stops shrinking" (#ram-transfer)
            last_rem = remaining
            if stalled_polls > 5:
                stalled_polls = 0
                downtime_ms *= 2
                self.log(f"auto-increased downtime to continue migration: {int(downtime_ms)} ms")
        final = max(remaining, 0.0) / stream.rate if stream.rate > 0 else 0.0
        yield Sleep(final)
        total_sent = cluster.stream_sent(stream)
        cluster.close_stream(stream)
        self.stream = None
        self.record.transfer_end = cluster.now
        downtime = int((final + cluster.params.timing.downtime_overhead) * 1000)
        elapsed = max(cluster.now - begin, 1e-3)
        speed = render_bytes(vm.maxmem / elapsed)
        self.log(f"average migration speed: {speed}/s - downtime {downtime} ms")
        self.log(f"migration completed, transferred {render_bytes(total_sent)} VM-state")
        self.log("migration status: completed")

    def phase2_cleanup(self, message: str) -> Worker:
        cluster, req = self.cluster, self.req
        if self.task.process is not None:
            self.task.process.shielded = True  # cleanup runs to its end
        if self.stream is not None:
            cluster.close_stream(self.stream)
            self.stream = None
        if self.port is not None:
            cluster.nodes[req.target].ports_listening.discard(self.port)
        self.log(f"ERROR: online migrate failure - {message}")
        self.log("aborting phase 2 - cleanup resources")
        self.log("migrate_cancel")
        yield self.ssh(f"qm stop {self.vm.vmid} --skiplock --migratedfrom {req.source}")
        self.vm.lock = None  # phase1 cleanup removes the lock on the source
        self.log(f"ERROR: migration finished with problems (duration {self.elapsed()})")

    def phase3(self, live: bool) -> Worker:
        """Config moves to the target; later SSH failures leave the VM moved."""
        cluster, req, vm = self.cluster, self.req, self.vm
        if self.task.process is not None:
            self.task.process.shielded = True  # past the config move there is no way back
        failed_step: str | None = None
        cluster.move_config(vm, req.target)
        if live and req.secure:
            command = f"rm -f /run/qemu-server/{vm.vmid}.migrate"
            result: SshResult = yield self.ssh(command)
            if not result.ok:
                self.log(f"ERROR: command '{self.ssh_prefix()} {command}' failed: exit code 255")
                failed_step = "ssh_drop:rm -f"
        if live:
            yield Sleep(cluster.params.timing.end_phase)
        result = yield self.ssh(f"qm unlock {vm.vmid}")
        if result.ok:
            vm.lock = None
        else:
            closing = result.stderr[-1] if result.stderr else "Connection closed"
            self.log(f"ERROR: failed to clear migrate lock: {closing}")
            failed_step = failed_step or "ssh_drop:qm unlock"
        if failed_step:
            self.log(f"ERROR: migration finished with problems (duration {self.elapsed()})")
            self.finish("problems", failed_step, "migration problems")
        else:
            self.log(f"migration finished successfully (duration {self.elapsed()})")
            self.finish("ok", "ok", None)
