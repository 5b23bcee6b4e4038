"""The engine learns a target's start window from the start phases task logs show
(runtime/start_phase.py): the log's own stamps up to `ssh tunnel ver 1`, never more than the
time since the request; no tunnel yet says "at least this long"."""

from __future__ import annotations

import asyncio

from proxmigrate.runtime.cluster import ClusterRuntime
from tests.unit.test_runtime_cluster import FakePve, settle, started

STARTING = [
    "2026-01-01 00:00:00 starting migration of VM 100 to node 'pve2' (10.0.0.2)",
    "2026-01-01 00:00:00 starting VM 100 on remote node 'pve2'",
]
TUNNEL_UP = [
    "2026-01-01 00:00:12 start remote tunnel",
    "2026-01-01 00:00:14 ssh tunnel ver 1",
    "2026-01-01 00:00:14 starting online/live migration on unix:/run/qemu-server/100.migrate",
]
CONFIGURED = 5.25  # start_spread_seconds + handshake_seconds, the default window
BUDGET = 5  # handshake slots of sshd's MaxStartups 10 the engine uses


async def first_look(log: list[str], looked_after: float) -> tuple[ClusterRuntime, FakePve, float]:
    """A runtime whose one migration's task shows `log` at the first look, `looked_after`
    seconds after the request; returns the runtime, the fake PVE and the clock's time then."""
    pve = FakePve()
    rt, _, clock, upid = await started(pve)
    pve.logs[upid] = log
    assert rt.engine.start_interval("pve2") == CONFIGURED / BUDGET
    clock[0] += looked_after
    await settle(rt)
    return rt, pve, clock[0]


def test_a_slow_start_phase_in_the_log_lengthens_the_targets_window() -> None:
    async def scenario() -> None:
        rt, pve, now = await first_look([*STARTING, *TUNNEL_UP], looked_after=20)
        assert pve.log_reads == 1
        # 14 s between the stamps, plus a second of their resolution, times the margin 1.25
        assert rt.engine.start_interval("pve2") == 15 * 1.25 / BUDGET
        assert rt.engine.pending_handshakes("pve2", now) == 0  # its own slot is free

    asyncio.run(scenario())


def test_no_tunnel_yet_means_the_phase_lasts_at_least_that_long() -> None:
    async def scenario() -> None:
        rt, _, now = await first_look(list(STARTING), looked_after=20)
        assert rt.engine.start_interval("pve2") == 20 * 1.25 / BUDGET
        assert rt.engine.pending_handshakes("pve2", now) == 1  # still in its start phase

    asyncio.run(scenario())


def test_stamps_never_count_longer_than_the_time_since_the_request() -> None:
    """A node clock (or pvesim's scaled time) running fast cannot inflate the window."""

    async def scenario() -> None:
        late = [line.replace("00:00:14", "00:02:20") for line in TUNNEL_UP]
        rt, _, _ = await first_look([*STARTING, *late], looked_after=12)
        assert rt.engine.start_interval("pve2") == 12 * 1.25 / BUDGET

    asyncio.run(scenario())
