"""Looks at a transfer past the guest's memory in use (issue 13, twenty-fourth pass): the log
tells nothing of what is left to re-send, so they come soon while the re-send is young and
the stream alone on its links, further apart the longer it has run (`may_end_recheck`)."""

from __future__ import annotations

import asyncio

from proxmigrate.engine import Job
from proxmigrate.runtime.attempt import Attempt
from proxmigrate.runtime.cluster import MigrationRequest
from proxmigrate.runtime.predictions import (
    MAY_END_ALONE_RECHECK_SECONDS,
    MAY_END_RECHECK_SECONDS,
    may_end_recheck,
)
from tests.unit.test_runtime_cluster import FIRST_LOOK, FakePve, settle, started

POLL = 2.0
# the guest uses 2 GiB of its 4 GiB: 0.1 GiB re-sent at 100 MiB/s, about 1 s past its memory
JUST_PAST = (
    "2026-01-01 00:00:11 migration active, transferred 2.1 GiB of 4.0 GiB VM-state, 100.0 MiB/s"
)
# 1 GiB re-sent at 10 MiB/s: 102 s past its memory
LONG_PAST = (
    "2026-01-01 00:00:11 migration active, transferred 3.0 GiB of 4.0 GiB VM-state, 10.0 MiB/s"
)


def _log_reads_after(line: str, polls: int) -> int:
    """Log reads of a lone migration whose every look shows `line`, `polls` polls after its
    first look."""

    async def scenario() -> int:
        pve = FakePve()
        rt, _, clock, upid = await started(pve, POLL)
        pve.logs[upid] = [line]
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert pve.log_reads == 1
        for _ in range(polls):
            pve.logs[upid].append(line)
            clock[0] += POLL
            await settle(rt)
        return pve.log_reads

    return asyncio.run(scenario())


def test_a_lone_stream_just_past_the_memory_in_use_is_looked_at_again_within_two_polls() -> None:
    assert _log_reads_after(JUST_PAST, 2) == 2  # 6 s on the old code: its links idle meanwhile


def test_a_long_re_send_is_looked_at_less_often() -> None:
    # sqrt(2 x 1.5 x 102) = 17.5 s: 8 polls without a look (a look every 3 polls on the old code)
    assert _log_reads_after(LONG_PAST, 8) == 1
    assert _log_reads_after(LONG_PAST, 9) == 2


def _running(name: str, source: str, target: str) -> Attempt:
    attempt = Attempt(MigrationRequest("ns", name, name, 100, target), {})
    attempt.job = Job(name, 100, source, target)
    return attempt


def test_a_stream_sharing_its_source_or_target_is_looked_at_no_sooner_than_before() -> None:
    moving = _running("a", "pve1", "pve2")
    assert may_end_recheck(moving, [moving], 1.0) == MAY_END_ALONE_RECHECK_SECONDS
    same_source = _running("b", "pve1", "pve3")
    assert may_end_recheck(moving, [moving, same_source], 1.0) == MAY_END_RECHECK_SECONDS
    same_target = _running("c", "pve4", "pve2")
    assert may_end_recheck(moving, [moving, same_target], 1.0) == MAY_END_RECHECK_SECONDS
    elsewhere = _running("d", "pve3", "pve4")
    assert may_end_recheck(moving, [moving, elsewhere], 1.0) == MAY_END_ALONE_RECHECK_SECONDS
    assert may_end_recheck(moving, [moving, same_source], 300.0) == 30.0  # sqrt(2 x 1.5 x 300)
