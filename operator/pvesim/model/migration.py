"""One `qmigrate` worker: PVE's phases, SSH connections, log lines and signal handling.

Sources: qemu-server `src/PVE/QemuMigrate.pm`, pve-guest-common `src/PVE/AbstractMigrate.pm`,
pve-cluster `src/PVE/SSHInfo.pm`, pve-common `src/PVE/RESTEnvironment.pm`; summarised in
docs/reference/proxmox.md #ssh-connections-of-one-migration, #ram-transfer,
#task-log-wording and #stopping-a-task.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvesim.model.network import Stream
from pvesim.model.process import ChildKilled, Command, Interrupted, Sleep, SshCall, Worker
from pvesim.model.tasklog import Task, duration, render_bytes

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM

INTERRUPTED = "interrupted by signal"  # AbstractMigrate.pm $eval_int's handler


class StepFailed(Exception):
    """A phase failed; `reason` is the ground-truth label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended: `error` as pve-common `PVE/Cmd.pm` run words it."""

    ok: bool
    error: str = ""  # `exit code 255` | `got signal 15`
    stderr: tuple[str, ...] = ()


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
    force: bool = False  # root only; lets prepare() pass local devices


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
    outcome: str | None = None  # ok | failed | problems | killed
    reason: str | None = None
    vm_moved: bool = False
    transfer_start: float | None = None  # RAM stream open ...
    transfer_end: float | None = None  # ... and closed
    ssh_connections: list[str] = field(default_factory=list)
    target_qemu_left: bool = False  # an incoming QEMU nobody stopped (SIGKILL, failed qm stop)


Step = Generator[Command, Any, CommandResult]


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
        self.nodeip = cluster.nodes[request.target].ip  # SSHInfo get_ssh_info
        self.delayed_interrupt = False
        self.tunnel = False  # the `qm mtunnel` ssh child is up
        mode = "offline" if not request.online else ("secure" if request.secure else "insecure")
        self.record = MigrationRecord(
            str(task.upid), vm.vmid, request.source, request.target, mode, cluster.now
        )

    # -- helpers ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.task.log(self.cluster.now, message)

    def ssh_prefix(self, ip: str | None = None) -> str:
        """pve-cluster SSHInfo.pm ssh_info_to_command as PVE::Tools::cmd2string prints it
        (String::ShellQuote quotes every word with `=`). The known_hosts options exist since
        pve-cluster 8.0.6 (PVE 8.1, commit 1f3febd "fix #4886: SSH: pin node's host key"),
        i.e. on every version pvesim plays."""
        name = self.req.target
        return (
            f"/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={name}' "
            f"-o 'UserKnownHostsFile=/etc/pve/nodes/{name}/ssh_known_hosts' "
            f"-o 'GlobalKnownHostsFile=none' root@{ip or self.nodeip}"
        )

    def elapsed(self) -> str:
        return duration(self.cluster.now - self.started)

    def remote(
        self, command: str, runtime: float = 0.0, on_login: Callable[[], None] | None = None
    ) -> Step:
        """One ssh connection running `command` for `runtime` s after login. A SIGTERM the
        worker only logs still kills the ssh child (`got signal 15`); one that dies raises
        `Interrupted` out of here."""
        self.record.ssh_connections.append(command)
        try:
            result = yield SshCall(self.req.source, self.req.target, command)
            if not result.ok:
                return CommandResult(False, "exit code 255", result.stderr)
            if on_login is not None:
                on_login()
            if runtime > 0:
                yield Sleep(runtime, child=command)
        except ChildKilled:
            return CommandResult(False, "got signal 15")
        return CommandResult(True)

    def cmd_quiet(self, command: str) -> Step:
        """AbstractMigrate.pm cmd_quiet/cmd_logerr: on failure `# <ssh command>`, then the
        captured output, timestamped (with `errmsg`, run_command keeps the last stderr line
        for the error text instead)."""
        try:
            result = yield from self.remote(command)
        except Interrupted:
            self.log(f"# {self.ssh_prefix()} {command}")
            raise
        if not result.ok:
            self.log(f"# {self.ssh_prefix()} {command}")
            for line in result.stderr:
                self.log(line)
        return result

    def finish(self, outcome: str, reason: str, error: str | None) -> None:
        self._end(outcome, reason)
        self.task.finish(self.cluster.now, error)

    def _end(self, outcome: str, reason: str) -> None:
        self.record.end = self.cluster.now
        self.record.outcome = outcome
        self.record.reason = reason
        self.record.vm_moved = self.vm.node == self.req.target
        self.vm.migrating = False
        self.cluster.on_migration_end(self)

    # -- signals (AbstractMigrate.pm migrate and $eval_int) ---------------------------------
    def _die(self) -> BaseException:
        self.delayed_interrupt = False
        return Interrupted(INTERRUPTED)

    def _delay(self) -> None:
        self.log("ERROR: received interrupt - delayed")
        self.delayed_interrupt = True

    def eval_int(self, body: Worker) -> Worker:
        """A step that a signal may cut: inside, SIGTERM dies `interrupted by signal`; a
        signal that arrived while delayed dies as the step begins."""
        if self.delayed_interrupt:
            self.delayed_interrupt = False
            raise Interrupted(INTERRUPTED)
        process = self.task.process
        assert process is not None
        process.sigterm = self._die
        try:
            yield from body
        finally:
            process.sigterm = self._delay

    def killed(self) -> None:
        """SIGKILL (kill_process_group, 5 s after SIGTERM): the cleanup stops where it is.
        Streams and tunnel die with the process group; locks and an incoming QEMU stay."""
        if self.stream is not None:
            self.cluster.close_stream(self.stream)
            self.stream = None
        if self.port is not None:
            self.cluster.nodes[self.req.target].ports_listening.discard(self.port)
        self._end("killed", "stopped")

    # -- the worker ------------------------------------------------------------------------
    def run(self) -> Worker:
        """API2/Qemu.pm migrate_vm's worker -> AbstractMigrate.pm migrate."""
        process = self.task.process
        assert process is not None
        process.on_kill = self.killed
        if self.req.by_ha:  # printed raw by fork_worker for RPC environment type `ha`
            self.task.raw("task started by HA resource agent")
        try:  # fork_worker's handler until migrate() installs its own
            yield Sleep(self.cluster.params.timing.api_worker_start)
            if self.req.network:  # SSHInfo.pm get_ssh_info, before migrate()'s handlers
                yield from self.get_migration_ip()
        except (StepFailed, Interrupted) as exc:  # straight to `TASK ERROR: <die text>`
            self.finish("failed", _reason(exc), _message(exc))
            return
        process.sigterm = self._delay
        try:
            yield from self.eval_int(self.prepare())
            if self.req.network:
                self.log(
                    f"use dedicated network address for sending migration traffic ({self.nodeip})"
                )
                result = yield from self.cmd_quiet("/bin/true")
                if not result.ok:
                    raise StepFailed(
                        f"Can't connect to destination address ({self.nodeip}) using public "
                        "key authentication",
                        _failure_reason(result, "ssh_drop:/bin/true"),
                    )
            try:
                yield from self.eval_int(self.phase1())
            except (StepFailed, Interrupted) as exc:
                self.log(f"ERROR: {_message(exc)}")
                self.phase1_cleanup()
                raise
        except (StepFailed, Interrupted) as exc:
            self.log(f"ERROR: migration aborted (duration {self.elapsed()}): {_message(exc)}")
            self.finish("failed", _reason(exc), "migration aborted")
            return
        if self.req.online:
            try:
                yield from self.eval_int(self.phase2())
            except (StepFailed, Interrupted) as exc:
                self.log(f"ERROR: online migrate failure - {_message(exc)}")
                yield from self.phase2_cleanup()
                self.log(f"ERROR: migration finished with problems (duration {self.elapsed()})")
                self.finish("failed", _reason(exc), "migration problems")
                return
        yield from self.phase3_cleanup()

    def get_migration_ip(self) -> Worker:
        """SSHInfo.pm get_ssh_info: `pvecm mtunnel` over the management network, through
        run_command without errfunc (ssh's stderr lands raw), dying with the command."""
        command = f"pvecm mtunnel -migration_network {self.req.network} -get_migration_ip"
        full = f"{self.ssh_prefix(self.nodeip)} {command}"
        try:
            result = yield from self.remote(command, self.cluster.params.timing.short_command)
        except Interrupted as exc:  # fork_worker's handler: `received interrupt`
            raise StepFailed(f"command '{full}' failed: {exc}", "stopped") from None
        if not result.ok:
            for line in result.stderr:
                self.task.raw(line)
            raise StepFailed(
                f"command '{full}' failed: {result.error}", "ssh_drop:get_migration_ip"
            )
        self.nodeip = self.cluster.nodes[self.req.target].migration_ip

    def prepare(self) -> Worker:
        """QemuMigrate.pm prepare: config lock, conntrack (PVE 9), local devices, ssh test."""
        cluster, vm = self.cluster, self.vm
        if vm.lock:  # QemuConfig->check_lock
            raise StepFailed(f"VM is locked ({vm.lock})", f"locked:{vm.lock}")
        if vm.running and cluster.params.pve_version >= 9:  # level warn: no `ERROR:`
            self.log(
                "conntrack state migration not supported or disabled, "
                "active connections might get dropped"
            )
        # check_local_resources: `$self->{running}` is still 0 here, so only `force` passes
        if vm.local_devices and not self.req.force:
            devices = ", ".join(vm.local_devices)
            raise StepFailed(
                f"can't migrate VM which uses local devices: {devices}", "local_devices"
            )
        try:
            result = yield from self.cmd_quiet("/bin/true")
        except Interrupted:  # run_command dies, cmd_quiet rethrows, prepare rewords it
            result = CommandResult(False, INTERRUPTED)
        if not result.ok:
            reason = "stopped" if result.error == INTERRUPTED else "ssh_drop:/bin/true"
            raise StepFailed("Can't connect to destination address using public key", reason)
        yield Sleep(cluster.params.timing.bin_true)

    def phase1(self) -> Worker:
        """QemuMigrate.pm phase1: lock, scan_local_volumes, sync_offline_local_volumes."""
        req, vm = self.req, self.vm
        self.log(f"starting migration of VM {vm.vmid} to node '{req.target}' ({self.nodeip})")
        vm.lock = "migrate"
        disks = sorted(vm.local_disks, key=lambda d: d.volid)
        errors: dict[str, str] = {}
        for disk in disks:  # scan_local_volumes: one `found` line per local volume
            if (disk.cdrom and "cloudinit" in disk.volname) or disk.key == "tpmstate0":
                self.log(f"found generated disk '{disk.volid}' (in current VM config)")
                continue
            if disk.cdrom:
                errors[disk.volid] = "local cdrom image"
            if disk.unused:
                self.log(f"found local disk '{disk.volid}' (unused)")
                continue
            if req.online and not req.with_local_disks:
                errors[disk.volid] = (
                    "can't live migrate attached local disks without with-local-disks option"
                )
            self.log(f"found local disk '{disk.volid}' (attached)")
        for volid, error in sorted(errors.items()):  # level warn: no `ERROR:`
            self.log(f"can't migrate local disk '{volid}': {error}")
        if errors:
            raise StepFailed(
                "Problem found while scanning volumes - can't migrate VM - check log",
                "local_disks",
            )
        if disks and not req.online:  # sync_offline_local_volumes, at no cost (not modelled)
            self.log("copying local disk images")
            for disk in disks:
                self.log(f"volume '{disk.volid}' is '{disk.volid}' on the target")
        yield from ()

    def phase1_cleanup(self) -> None:
        """Runs under the delayed handler; removes the lock phase1 set."""
        self.log("aborting phase 1 - cleanup resources")
        self.vm.lock = None

    def phase2(self) -> Worker:
        cluster, req, vm = self.cluster, self.req, self.vm
        timing = cluster.params.timing
        self.log(f"starting VM {vm.vmid} on remote node '{req.target}'")
        started: list[Task] = []

        def qm_start() -> None:  # the incoming QEMU runs until a `qm stop` ends it
            started.append(cluster.start_side_task(req.target, "qmstart", str(vm.vmid)))
            self.record.target_qemu_left = True

        try:
            runtime = cluster.rng.uniform(timing.qm_start_min, timing.qm_start_max)
            result = yield from self.remote(f"qm start {vm.vmid}", runtime, qm_start)
        except Interrupted:  # run_command(noerr => 1) returns its initial exit code -1
            for task in started:
                task.finish(cluster.now)
            raise StepFailed("remote command failed with exit code -1", "stopped") from None
        if not result.ok:
            for line in result.stderr:
                self.log(f"[{req.target}] {line}")
            raise StepFailed("remote command failed with exit code 255", "ssh_drop:qm start")
        qmstart = started[0]
        if not req.secure:
            self.port = cluster.allocate_port(req.target)
            if self.port is None:
                net = cluster.params.network
                message = (
                    f"unable to find free port ({net.insecure_port_first}-{net.insecure_port_end})"
                )
                self.log(f"[{req.target}] {message}")
                qmstart.finish(cluster.now, message)
                self.record.target_qemu_left = False
                raise StepFailed("remote command failed with exit code 255", "port_exhausted")
        qmstart.finish(cluster.now)
        self.log("start remote tunnel")
        result = yield from self.remote("qm mtunnel")
        if not result.ok:
            for line in result.stderr:  # the tunnel's stderr is not captured: raw
                self.task.raw(line)
            raise StepFailed("can't open tunnel - no reply", "ssh_drop:mtunnel")
        self.tunnel = True
        yield Sleep(timing.tunnel_setup)
        self.log("ssh tunnel ver 1")
        uri = (
            f"unix:/run/qemu-server/{vm.vmid}.migrate"
            if req.secure
            else f"tcp:{self.nodeip}:{self.port}"
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
            # QemuMigrate.pm phase2 $downtimecounter counts `$rem > $lastrem`; the fluid
            # model's remaining sits flat (capped at the RAM) where QEMU's wobbles: flat counts
            if last_rem is not None and remaining >= last_rem:
                stalled_polls += 1
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

    def phase2_cleanup(self) -> Worker:
        """QemuMigrate.pm phase2_cleanup, under the delayed handler: the source config loses
        its lock first, then `qm stop` ends the incoming QEMU, then finish_tunnel removes
        the remote socket (secure) over one more ssh."""
        cluster, req, vm = self.cluster, self.req, self.vm
        if self.stream is not None:
            cluster.close_stream(self.stream)
            self.stream = None
        if self.port is not None:
            cluster.nodes[req.target].ports_listening.discard(self.port)
        self.log("aborting phase 2 - cleanup resources")
        self.log("migrate_cancel")
        vm.lock = None
        command = f"qm stop {vm.vmid} --skiplock --migratedfrom {req.source}"
        timing = cluster.params.timing
        # assumption: stopping the incoming QEMU takes as long as starting it
        runtime = cluster.rng.uniform(timing.qm_start_min, timing.qm_start_max)
        result = yield from self.remote(command, runtime)
        if result.ok:
            self.record.target_qemu_left = False
        else:  # run_command with outfunc/errfunc: only its error is logged
            self.log(f"ERROR: command '{self.ssh_prefix()} {command}' failed: {result.error}")
        if self.tunnel:
            yield from self.finish_tunnel()

    def finish_tunnel(self) -> Generator[Command, Any, bool]:
        """pve-guest-common Tunnel.pm finish_tunnel: ssh `rm -f` of the forwarded socket
        (secure only), through run_command without errfunc: ssh's stderr lands raw."""
        self.tunnel = False
        if not self.req.secure:
            return True
        command = f"rm -f /run/qemu-server/{self.vm.vmid}.migrate"
        result = yield from self.remote(command)
        if not result.ok:
            for line in result.stderr:
                self.task.raw(line)
            self.log(f"ERROR: command '{self.ssh_prefix()} {command}' failed: {result.error}")
        return result.ok

    def phase3_cleanup(self) -> Worker:
        """Config moves to the target; later SSH failures leave the VM moved. Runs under the
        delayed handler: a SIGTERM here only kills the ssh child running at that moment."""
        cluster, req, vm = self.cluster, self.req, self.vm
        failed_step: str | None = None
        cluster.move_config(vm, req.target)
        live = req.online
        if live:  # resume over the tunnel, then finish_tunnel
            yield Sleep(cluster.params.timing.end_phase)
            if not (yield from self.finish_tunnel()):
                failed_step = "ssh_drop:rm -f"
        result = yield from self.remote(f"qm unlock {vm.vmid}")
        if result.ok:
            vm.lock = None
        else:  # cmd_logerr(errmsg => "failed to clear migrate lock")
            self.log(f"# {self.ssh_prefix()} qm unlock {vm.vmid}")
            for line in result.stderr[:-1]:
                self.log(line)
            last = result.stderr[-1] if result.stderr else result.error
            self.log(f"ERROR: failed to clear migrate lock: {last}")
            failed_step = failed_step or _failure_reason(result, "ssh_drop:qm unlock")
        if failed_step:
            self.log(f"ERROR: migration finished with problems (duration {self.elapsed()})")
            self.finish("problems", failed_step, "migration problems")
        else:
            self.log(f"migration finished successfully (duration {self.elapsed()})")
            self.finish("ok", "ok", None)


def _message(exc: StepFailed | Interrupted) -> str:
    return exc.message if isinstance(exc, StepFailed) else str(exc)


def _reason(exc: StepFailed | Interrupted) -> str:
    return exc.reason if isinstance(exc, StepFailed) else "stopped"


def _failure_reason(result: CommandResult, drop: str) -> str:
    return "stopped" if result.error == "got signal 15" else drop
