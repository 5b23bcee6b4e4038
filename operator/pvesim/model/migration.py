"""One `qmigrate` worker: PVE's phases in order, their log lines, what a stop leaves.

Sources: qemu-server `src/PVE/QemuMigrate.pm`, pve-guest-common `src/PVE/AbstractMigrate.pm`,
pve-cluster `src/PVE/SSHInfo.pm`, pve-common `src/PVE/RESTEnvironment.pm`; summarised in
docs/reference/proxmox.md #ssh-connections-of-one-migration, #task-log-wording and
#stopping-a-task. Phase 2 is in `migration_live.py`, the shared tools in `migration_base.py`.
"""

from __future__ import annotations

from pvesim.model.migration_base import (
    INTERRUPTED,
    CommandResult,
    MigrationRecord,
    MigrationRequest,
    StepFailed,
    failure_reason,
)
from pvesim.model.migration_live import LiveMigration
from pvesim.model.process import Interrupted, Sleep, Worker

__all__ = ["MigrationRecord", "MigrationRequest", "MigrationRun"]


class MigrationRun(LiveMigration):
    """The worker body of one migration task."""

    def finish(self, outcome: str, reason: str, error: str | None) -> None:
        self._end(outcome, reason)
        self.task.finish(self.cluster.now, error)

    def _end(self, outcome: str, reason: str) -> None:
        self.close_held()
        self.record.end = self.cluster.now
        self.record.outcome = outcome
        self.record.reason = reason
        self.record.vm_moved = self.vm.node == self.req.target
        self.vm.migrating = False
        self.cluster.on_migration_end(self)

    def killed(self) -> None:
        """SIGKILL (kill_process_group, 5 s after SIGTERM): the cleanup stops where it is.
        Streams and tunnel die with the process group; locks and an incoming QEMU stay."""
        if self.stream is not None:
            self.cluster.links.close(self.stream)
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
                        failure_reason(result, "ssh_drop:/bin/true"),
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
            failed_step = failed_step or failure_reason(result, "ssh_drop:qm unlock")
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
