"""The safety net of task lists (a worker killed without an end line shows only there) is
read every two minutes, not every minute: a long transfer pays less for it, and a killed
worker is still noticed within `SAFETY_NET_SECONDS`."""

from __future__ import annotations

import asyncio

from proxmigrate.runtime.look_schedule import SAFETY_NET_SECONDS
from tests.unit.test_runtime_tracking_requests import POLL, phase, transferring


def test_a_long_transfer_is_listed_every_two_minutes() -> None:
    async def scenario() -> None:
        # ten minutes into a transfer predicted to take longer: no end near, only the net
        _, _, pve, _, _ = await transferring(polls=300)
        assert pve.task_list_reads <= 5  # every minute: 10

    asyncio.run(scenario())


def test_a_killed_worker_is_noticed_within_the_safety_net() -> None:
    async def scenario() -> None:
        rt, kube, pve, clock, _ = await transferring(polls=100)
        for row in pve.task_rows:
            row["status"], row["endtime"] = "unexpected status", 0x6B000010
        killed_at = clock[0]
        while phase(kube) == "Running" and clock[0] - killed_at < 2 * SAFETY_NET_SECONDS:
            clock[0] += POLL
            await rt.run_once()
            await rt.settle()
        assert phase(kube) in ("Queued", "Failed")
        assert clock[0] - killed_at <= SAFETY_NET_SECONDS + POLL

    asyncio.run(scenario())
