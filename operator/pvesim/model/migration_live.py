"""Phase 2 of a live migration and its cleanup: the incoming VM on the target, the ssh
tunnel, the RAM transfer (qemu-server `src/PVE/QemuMigrate.pm` phase2, phase2_cleanup;
pve-guest-common `src/PVE/Tunnel.pm` finish_tunnel; docs/reference/proxmox.md#ram-transfer).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pvesim.model.migration_base import MigrationBase, StepFailed
from pvesim.model.phase2_polls import SLACK, Phase2Polls
from pvesim.model.process import Command, Interrupted, Sleep, Worker
from pvesim.model.qemu_ram import RamMigration
from pvesim.model.tasklog import Task, render_bytes

# QemuMigrate.pm $migrate_downtime_max, "as defined in QEMU's migration/options.c"
# (MAX_MIGRATE_DOWNTIME, 2000 s)
DOWNTIME_MAX_MS = 2000.0 * 1000


def logged_speed(ram: RamMigration, wire_rate: float) -> float:
    """The speed phase2 logs, `pages-per-second` x `page-size` (qemu-server
    src/PVE/QemuMigrate.pm phase2, PVE 8 and 9 alike): QEMU counts every page it handled in
    the last 100 ms, zero pages included (QEMU migration/migration.c
    migration_update_counters, migration/ram.c ram_get_total_transferred_pages), while a
    zero page costs only its header on the wire (ram.c save_zero_page). The first pass
    handles the whole RAM (`size`) for the memory in use (`mem`) on the wire, so its speed
    is the wire rate times size / mem (assumptions: the unused pages are spread evenly over
    the pass, and scanning them takes no time next to the link); later passes re-send
    written pages only, none of them zero: the wire rate."""
    first_pass = ram.syncs == 1  # ram_init_bitmaps' sync only: no pass has ended yet
    if first_pass and 0 < ram.mem < ram.size:
        return wire_rate * ram.size / ram.mem
    return wire_rate


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
        """QEMU copies in passes until the rest fits the downtime limit, then stops the guest
        and copies the rest (pvesim/model/qemu_ram.py); PVE polls `query-migrate`, logs and
        counts (qemu-server src/PVE/QemuMigrate.pm phase2, the same in PVE 8 and 9)."""
        cluster, vm = self.cluster, self.vm
        assert self.stream is not None
        stream = self.stream
        timing = cluster.params.timing
        begin = last = cluster.now
        ram = RamMigration(float(vm.mem), float(vm.maxmem), vm.dirty_rate, begin)
        sent = 0.0
        polls = Phase2Polls(
            timing.poll_interval, timing.fast_poll_interval, begin + timing.poll_interval
        )
        while True:
            # QEMU migration/migration.c migration_update_counters: threshold_size is the
            # bandwidth just measured times downtime-limit
            threshold = stream.rate * downtime_ms / 1000
            wake = min(polls.wake_at(), ram.next_tick)
            if stream.rate > 0:  # when the pass's rest falls below the threshold
                wake = min(wake, cluster.now + (ram.remaining - threshold) / stream.rate)
            yield Sleep(max(wake - cluster.now, 1e-3))
            now = cluster.now
            sent_now = cluster.links.sent(stream)
            ram.advance(sent_now - sent, now - last)
            sent, last = sent_now, now
            polls.catch_up(now, sent, ram.remaining, stream.rate)
            threshold = stream.rate * downtime_ms / 1000
            # migration_iteration_run: a pending estimate below threshold_size asks for the
            # exact one (a bitmap sync); completion if that still fits
            if ram.remaining <= threshold * (1 + 1e-6) + 1.0:
                ram.sync(now, sent)
                polls.synced = True
                if ram.remaining <= threshold * (1 + 1e-6) + 1.0:
                    break
            if now + SLACK >= ram.next_tick and ram.tick(now, sent):
                polls.synced = True
            if now + SLACK < polls.next_poll:
                continue
            log, double = polls.poll(now, sent, ram.remaining)
            if log:
                logged = logged_speed(ram, stream.rate)
                progress = (
                    f"migration active, transferred {render_bytes(sent)} of "
                    f"{render_bytes(vm.maxmem)} VM-state, {render_bytes(logged)}/s"
                )
                if ram.dirty_pages_rate > logged:
                    dirty = render_bytes(ram.dirty_pages_rate)
                    progress += f", VM dirties lots of memory: {dirty}/s"
                self.log(progress)
            if double:
                downtime_ms = self.increase_downtime(downtime_ms)
        final = ram.remaining / stream.rate if stream.rate > 0 else 0.0
        yield Sleep(final)
        total_sent = cluster.links.sent(stream)
        cluster.links.close(stream)
        self.stream = None
        self.record.transfer_end = cluster.now
        yield Sleep(polls.next_at(cluster.now) - cluster.now)  # phase2 sees `completed`
        downtime = int((final + cluster.params.timing.downtime_overhead) * 1000)
        elapsed = max(cluster.now - begin, 1e-3)
        speed = render_bytes(vm.maxmem / elapsed)
        self.log(f"average migration speed: {speed}/s - downtime {downtime} ms")
        self.log(f"migration completed, transferred {render_bytes(total_sent)} VM-state")
        self.log("migration status: completed")

    def increase_downtime(self, downtime_ms: float) -> float:
        """QemuMigrate.pm increase_migrate_downtime: double, capped at QEMU's 2000 s."""
        if downtime_ms >= DOWNTIME_MAX_MS:
            return DOWNTIME_MAX_MS
        downtime_ms = downtime_ms * 2
        if downtime_ms > DOWNTIME_MAX_MS:  # cap_migrate_downtime
            downtime_ms = DOWNTIME_MAX_MS
            self.log(f"capping downtime limit to maximum possible: {int(downtime_ms)} ms")
        self.log(f"auto-increased downtime to continue migration: {int(downtime_ms)} ms")
        return downtime_ms

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
