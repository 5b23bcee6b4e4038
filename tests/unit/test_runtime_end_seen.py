"""A migration's end is seen within a poll once its transfer was seen completed, however
long its end phase (the SSH logins of `rm -f` and `qm unlock` on a busy target): the slot
it holds goes to the next queued migration at once (issue 12's reaction trials at
`maxParallel` 1 waited 9-10 s for it)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.unit.test_runtime_cluster import FakePve, settle, started


def succeeded(patches: list[dict[str, Any]]) -> bool:
    return any(patch.get("phase") == "Succeeded" for patch in patches)


POLL = 0.25  # the reaction bench's taskPollSeconds
COMPLETED = "2026-01-01 00:00:20 migration status: completed"


def test_an_end_phase_longer_than_the_end_window_is_seen_at_the_next_poll() -> None:
    async def scenario() -> None:
        pve = FakePve()
        rt, kube, clock, upid = await started(pve, POLL)
        pve.logs[upid] = [COMPLETED]
        clock[0] += 20  # past the first look: the transfer is over, the end phase runs
        await settle(rt)
        assert pve.log_reads == 1
        before = pve.log_reads + pve.task_list_reads
        end_phase = 3 * rt.engine.policy.end_window_seconds  # slow logins on the target
        polls = int(end_phase / POLL)
        for _ in range(polls):
            clock[0] += POLL
            await settle(rt)
        assert not succeeded(kube.patches)
        pve.finish(upid, "OK")
        clock[0] += POLL
        await settle(rt)
        clock[0] += POLL
        await settle(rt)
        assert succeeded(kube.patches)
        # one look a poll at most (its log: the only task of its node), not one of each
        assert pve.log_reads + pve.task_list_reads - before <= polls + 2

    asyncio.run(scenario())
