"""A log read that shows lines its worker wrote since the last read shows the worker alive,
as a task list's `running` row would (issue 13, fifteenth pass): the safety net's task list
is read only for a task not seen alive for `SAFETY_NET_SECONDS`, and a worker killed without
an end line is still seen within that time of its last line."""

from __future__ import annotations

import asyncio

from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.runtime.look_schedule import SAFETY_NET_SECONDS
from tests.unit.test_runtime_cluster import FIRST_LOOK, FakeKube, FakePve, settle, started
from tests.unit.test_runtime_tracking_requests import phase

POLL = 2.0
BEGIN = 1000.0  # when `started` sends the request (ours)


def past_memory_in_use(at: float) -> str:
    """A progress line stamped `at` seconds of ours after the request (the node's clock at
    our rate): 2.5 GiB sent of a guest using 2 GiB, re-sending what it dirtied, so the
    transfer may end any moment and its log is read every few seconds."""
    seconds = int(at - BEGIN)
    stamp = f"2026-01-01 00:{seconds // 60:02d}:{seconds % 60:02d}"
    return f"{stamp} migration active, transferred 2.5 GiB of 4.0 GiB VM-state, 100.0 MiB/s"


async def writing_for(pve: FakePve, seconds: float) -> tuple[ClusterRuntime, FakeKube, list[float]]:
    """A runtime whose migration's worker logs a progress line every second of ours (as
    qemu-server's phase2 loop does) for `seconds` after its first look."""
    rt, kube, clock, upid = await started(pve, POLL)
    pve.logs[upid] = [past_memory_in_use(clock[0] + 1)]
    clock[0] += FIRST_LOOK
    await settle(rt)
    until = clock[0] + seconds
    while clock[0] < until:
        clock[0] += POLL
        pve.logs[upid] += [past_memory_in_use(clock[0] - 1), past_memory_in_use(clock[0])]
        await settle(rt)
    return rt, kube, clock


def test_a_task_whose_log_shows_it_alive_needs_no_safety_net_list() -> None:
    """Five minutes of a transfer read every few seconds: the old tracker read its node's
    task list every two minutes besides (2 lists), now none."""

    async def scenario() -> None:
        pve = FakePve()
        _, kube, _ = await writing_for(pve, 2.5 * SAFETY_NET_SECONDS)
        assert phase(kube) == "Running"
        assert pve.log_reads > 20
        assert pve.task_list_reads == 0

    asyncio.run(scenario())


def test_a_worker_killed_after_its_last_line_is_seen_within_the_safety_net() -> None:
    """SIGKILL after a line: the log grows no more and has no end line; the task list says
    `unexpected status` (pve-common UPID.pm read_status), read within SAFETY_NET_SECONDS of
    the last line although the log reads put the net off while lines came."""

    async def scenario() -> None:
        pve = FakePve()
        rt, kube, clock = await writing_for(pve, 30.0)
        killed_at = clock[0]
        for row in pve.task_rows:
            row["status"], row["endtime"] = "unexpected status", 0x6B000010
        while phase(kube) == "Running" and clock[0] < killed_at + 2 * SAFETY_NET_SECONDS:
            clock[0] += POLL
            await settle(rt)
        assert phase(kube) in ("Queued", "Failed")
        assert clock[0] - killed_at <= SAFETY_NET_SECONDS + POLL

    asyncio.run(scenario())
