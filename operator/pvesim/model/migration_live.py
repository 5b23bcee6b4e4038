"""Phase 2 of a live migration and its cleanup: the incoming VM on the target, the ssh
tunnel, the RAM transfer (qemu-server `src/PVE/QemuMigrate.pm` phase2, phase2_cleanup;
pve-guest-common `src/PVE/Tunnel.pm` finish_tunnel; docs/reference/proxmox.md#ram-transfer).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pvesim.model.migration_base import MigrationBase, StepFailed
from pvesim.model.process import Command, Interrupted, Sleep, Worker
from pvesim.model.tasklog import Task, render_bytes


class LiveMigration(MigrationBase):
    """Phase 2: `qm start` on the target, the tunnel, the transfer; and its undoing."""

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
        result = yield from self.remote("qm mtunnel", hold=True)
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
        self.stream = cluster.links.open(req.source, req.target, cap)
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
            sent = cluster.links.sent(stream)
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
        total_sent = cluster.links.sent(stream)
        cluster.links.close(stream)
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
            cluster.links.close(self.stream)
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
        self.close_held()
        if not self.req.secure:
            return True
        command = f"rm -f /run/qemu-server/{self.vm.vmid}.migrate"
        result = yield from self.remote(command)
        if not result.ok:
            for line in result.stderr:
                self.task.raw(line)
            self.log(f"ERROR: command '{self.ssh_prefix()} {command}' failed: {result.error}")
        return result.ok
