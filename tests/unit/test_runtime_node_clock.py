"""Predictions in the node's time: a task log's stamps and rates run on the node's clock,
which runs at ours on real PVE (at an offset: its time zone) and faster under pvesim's
`--time-scale`. The runtime learns the rate from what it reads already."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pytest

from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.runtime.node_clock import NodeClock
from tests.unit.test_runtime_cluster import FIRST_LOOK, REQUEST, FakePve, runtime, settle

POLL = 2.0
T0 = 1_000_000.0  # our clock when the request is sent
NODE0 = 1_800_000_000  # the node's clock then (another offset: its time zone, its epoch)


def stamp(node_seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(node_seconds))


def node_time(ours: float, scale: float) -> float:
    return NODE0 + (ours - T0) * scale


def observe_reads(clock: NodeClock, scale: float, reads: int, lag: float = 1.0) -> None:
    """Tasks requested 10 s apart, each log read 12 s after its request; the last line read
    was written `lag` node seconds before the read (PVE logs progress about every second)."""
    for n in range(reads):
        sent = T0 + 10 * n
        clock.requested(sent, float(int(node_time(sent, scale) + 0.3)))
        read = sent + 12
        clock.read(read, float(int(node_time(read, scale) - lag)))


@pytest.mark.parametrize("scale", [1.0, 20.0, 3.5, 0.5])
def test_the_rate_is_the_one_closest_to_ours_that_the_stamps_allow(scale: float) -> None:
    clock = NodeClock()
    assert clock.rate == 1.0  # nothing seen: ours
    observe_reads(clock, scale, 1)
    low, high = clock.bounds()
    assert low <= scale <= high
    observe_reads(clock, scale, 12)
    low, high = clock.bounds()
    assert low <= scale <= high
    if scale == 1.0:
        assert clock.rate == 1.0  # real PVE: exactly ours, whatever the offset
    else:
        assert clock.rate == pytest.approx(scale, rel=0.15)


def test_a_stepped_node_clock_starts_over() -> None:
    clock = NodeClock()
    observe_reads(clock, 1.0, 6)
    # the node's local time jumps an hour ahead (DST): the old bounds contradict the new
    later = T0 + 200
    clock.requested(later, float(int(node_time(later, 1.0) + 3600)))
    clock.read(later + 12, float(int(node_time(later + 12, 1.0) + 3600)))
    assert clock.rate == 1.0


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_a_limited_transfer_end_is_predicted_in_our_time(scale: float) -> None:
    """A 10 MiB/s transfer (a bandwidth limit) with 1 GiB of the guest's memory in use left:
    102 s of the node's time, 5 s of ours at 20x. Its end is seen within a few polls, not
    by the minute's safety net (the old prediction took the log's seconds for ours)."""

    async def scenario() -> None:
        clock = [T0]
        pve = FakePve()  # the guest: 4 GiB of RAM, 2 GiB in use
        rt, kube = runtime(pve, clock)
        rt.task_poll_seconds = POLL
        await rt.accept(REQUEST, {})
        await settle(rt)
        upid = pve.task_rows[0]["upid"]
        pve.logs[upid] = [f"{stamp(NODE0)} starting migration of VM 100 to node 'pve2'"]
        clock[0] += FIRST_LOOK
        now = node_time(clock[0], scale)
        pve.logs[upid] += [
            f"{stamp(NODE0 + 1)} ssh tunnel ver 1",
            f"{stamp(now - 1)} migration active, transferred 1.0 GiB of 4.0 GiB VM-state, "
            "10.0 MiB/s",
        ]
        await settle(rt)
        assert pve.log_reads == 1
        attempt = rt.attempts[REQUEST.key]
        assert attempt.ending_at is not None
        left = attempt.ending_at - clock[0]
        assert left == pytest.approx(1024 / 10 / scale, rel=0.1)

        ends = clock[0] + 1024 / 10 / scale
        while clock[0] < ends:
            clock[0] += POLL
            await settle(rt)
        pve.finish(upid, "OK")
        seen = None
        for _ in range(10):
            clock[0] += POLL
            await settle(rt)
            if kube.patches[-1].get("phase") == "Succeeded":
                seen = clock[0]
                break
        assert seen is not None and seen - ends <= 4 * POLL

    asyncio.run(scenario())


class SlowLogPve(FakePve):
    """A log read takes 50 ms of our clock, as it does over the network."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock

    async def task_log(self, node: str, upid: str, start: int = 0, **_: Any) -> list[str]:
        self.clock[0] += 0.05
        return await super().task_log(node, upid, start)


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_a_task_resumed_after_a_restart_is_predicted_from_its_recorded_request(
    scale: float,
) -> None:
    """The operator restarted 60 s (ours) after its request: the runtime knows nothing of
    the node's clock, and the request time is the intent's `startTime` in the status (whole
    seconds, so no later than the POST). Its first log read bounds the node's rate from that
    time: the transfer end is predicted in our time at once. Taking the resume as the
    request time instead claims the node's clock was at the task's first stamp a moment
    before the read, whose last line is 59 node seconds later: a rate of ~1000."""

    async def scenario() -> None:
        clock = [T0 + 60]
        pve = SlowLogPve(clock)
        rt, _ = runtime(pve, clock)
        upid = "UPID:pve1:00001000:00002000:6B000000:qmigrate:100:root@pam!t:"
        pve.task_rows.append({"upid": upid, "starttime": 0x6B000000, "status": "RUNNING"})
        now = node_time(clock[0], scale)
        pve.logs[upid] = [
            f"{stamp(NODE0)} starting migration of VM 100 to node 'pve2'",
            f"{stamp(NODE0 + 1)} ssh tunnel ver 1",
            f"{stamp(now - 1)} migration active, transferred 1.0 GiB of 4.0 GiB VM-state, "
            "10.0 MiB/s",
        ]
        requested = datetime.datetime.fromtimestamp(T0, datetime.UTC)
        intent = {
            "phase": "Running",
            "sourceNode": "pve1",
            "upid": upid,
            "attemptCount": 1,
            "attempts": [{"startTime": to_rfc3339(requested), "outcome": "Running"}],
        }
        await rt.accept(REQUEST, intent)
        await settle(rt)
        assert pve.log_reads == 1 and pve.posts == []
        assert rt.node_clocks.rate("pve1") == pytest.approx(scale, rel=0.05)
        attempt = rt.attempts[REQUEST.key]
        assert attempt.ending_at is not None
        assert attempt.ending_at - clock[0] == pytest.approx(1024 / 10 / scale, rel=0.1)

    asyncio.run(scenario())
