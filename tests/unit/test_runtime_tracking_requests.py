"""PVE requests per migration scale with migrations, not with the time they run: a task's log
tells its progress and its end, task lists are read near predicted ends and as a safety net,
and every end (success, failure with an end line, a worker killed without one) is still seen."""

from __future__ import annotations

import asyncio
import math

from proxmigrate.pve.task_log import log_exitstatus
from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.runtime.look_schedule import SAFETY_NET_SECONDS
from tests.unit.test_runtime_cluster import FakeKube, FakePve, settle, started

POLL = 2.0
GIB = 2**30
RATE = 3.4  # MiB/s: the fake guest's 2 GiB in use take about ten minutes


def progress(sent: float) -> str:
    return (
        f"2026-01-01 00:01:00 migration active, transferred {sent / GIB:.2f} GiB of 4.0 GiB "
        f"VM-state, {RATE} MiB/s"
    )


def phase(kube: FakeKube) -> str:
    return str(next(p["phase"] for p in reversed(kube.patches) if "phase" in p))


class SlowTransferPve(FakePve):
    """One live migration whose log grows by a progress line per second of transfer."""

    def advance(self, upid: str, seconds: float, sent: float) -> float:
        sent = min(sent + seconds * RATE * 2**20, 2 * GIB)
        self.logs.setdefault(upid, []).append(progress(sent))
        return sent


async def transferring(
    polls: int,
) -> tuple[ClusterRuntime, FakeKube, SlowTransferPve, list[float], str]:
    """A runtime whose one migration has been transferring for `polls` polls."""
    pve = SlowTransferPve()
    rt, kube, clock, upid = await started(pve, POLL)
    sent = 0.0
    for _ in range(polls):
        clock[0] += POLL
        sent = pve.advance(upid, POLL, sent)
        await settle(rt)
    return rt, kube, pve, clock, upid


def test_a_long_transfer_reads_task_lists_per_minute_not_per_poll() -> None:
    """Ten minutes of transfer: at most one task list a minute plus a few near its end (the
    old tracker read one every fifth poll: 60), a handful of log reads, the end seen at once."""

    async def scenario() -> None:
        pve = SlowTransferPve()
        rt, kube, clock, upid = await started(pve, POLL)
        began, sent = clock[0], 0.0
        while sent < 2 * GIB:
            clock[0] += POLL
            sent = pve.advance(upid, POLL, sent)
            await settle(rt)
        seconds = clock[0] - began
        assert seconds > 590
        assert pve.task_list_reads <= math.ceil(seconds / SAFETY_NET_SECONDS) + 1
        assert pve.log_reads <= 8
        pve.logs[upid].append("2026-01-01 00:11:00 migration status: completed")
        clock[0] += POLL
        await settle(rt)
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 1  # the end phase is held
        pve.finish(upid, "OK")
        clock[0] += POLL
        await settle(rt)
        assert phase(kube) == "Succeeded"
        assert pve.task_list_reads <= math.ceil(seconds / SAFETY_NET_SECONDS) + 3

    asyncio.run(scenario())


def test_a_failure_mid_transfer_is_seen_within_the_safety_net() -> None:
    """Predicted to run for minutes, the task fails after one: its end line (and the task
    list) show it at the next look, within SAFETY_NET_SECONDS."""

    async def scenario() -> None:
        rt, kube, pve, clock, upid = await transferring(polls=30)
        lines = [*pve.logs[upid], "2026-01-01 00:01:01 ERROR: migration aborted: out of memory"]
        pve.finish(upid, "migration aborted", lines)
        failed_at = clock[0]
        while phase(kube) == "Running" and clock[0] - failed_at < 120:
            clock[0] += POLL
            await settle(rt)
        assert phase(kube) in ("Queued", "Failed")
        assert clock[0] - failed_at <= SAFETY_NET_SECONDS + POLL

    asyncio.run(scenario())


def test_a_worker_killed_without_an_end_line_is_seen_in_the_task_list() -> None:
    """SIGKILL leaves the log without `TASK ...`; PVE's task list then says `unexpected
    status` (pve-common UPID.pm read_status): the safety net reads it."""

    async def scenario() -> None:
        rt, kube, pve, clock, _ = await transferring(polls=10)
        for row in pve.task_rows:
            row["status"], row["endtime"] = "unexpected status", 0x6B000010
        killed_at = clock[0]
        while phase(kube) == "Running" and clock[0] - killed_at < 120:
            clock[0] += POLL
            await settle(rt)
        assert phase(kube) in ("Queued", "Failed")
        assert clock[0] - killed_at <= SAFETY_NET_SECONDS + POLL

    asyncio.run(scenario())


def test_the_log_end_line_ends_a_task_without_a_task_list() -> None:
    async def scenario() -> None:
        pve = SlowTransferPve()
        rt, kube, clock, upid = await started(pve, POLL)
        # ended before its first look; the task list would still show it running
        pve.logs[upid] = ["2026-01-01 00:00:09 migration finished successfully", "TASK OK"]
        for _ in range(6):
            clock[0] += POLL
            await settle(rt)
        assert phase(kube) == "Succeeded"
        assert pve.task_list_reads == 0
        assert pve.log_reads == 1

    asyncio.run(scenario())


def test_log_exitstatus_reads_the_line_the_task_list_takes_its_status_from() -> None:
    assert log_exitstatus(["x", "TASK OK"]) == "OK"
    assert log_exitstatus(["TASK WARNINGS: 2"]) == "WARNINGS: 2"
    assert log_exitstatus(["TASK ERROR: migration aborted"]) == "migration aborted"
    assert log_exitstatus(["2026-01-01 00:00:01 migration active, ..."]) is None
    assert log_exitstatus([]) is None
