"""Transfer-end predictions stay true: once re-sent pages pass the guest's memory the log no
longer tells the end, so the runtime looks again later instead of taking the end as now."""

from __future__ import annotations

import asyncio

from proxmigrate.pve.task_log import transfer_progress
from proxmigrate.runtime.look_schedule import SAFETY_NET_SECONDS
from tests.unit.test_runtime_cluster import (
    REQUEST,
    FakePve,
    settle,
    started,
    transfer_ends_told,
)

POLL = 2.0
# a busy guest: 9 GiB sent of 8 GiB of RAM, the stream slower than its dirtying
RESENDING = (
    "2026-01-01 00:01:05 migration active, transferred 9.0 GiB of 8.0 GiB VM-state, "
    "100.0 MiB/s, VM dirties lots of memory: 150.0 MiB/s"
)


def test_progress_past_the_guest_memory_has_no_end_prediction() -> None:
    progress = transfer_progress([RESENDING])
    assert progress is not None
    assert progress.resending
    assert progress.seconds_left is None  # not 0: the rest is not in the log
    assert progress.rate == 100 * 2**20
    assert progress.dirty_rate == 150 * 2**20
    assert progress.dirty_bounds(60.0) == (150 * 2**20, 150 * 2**20)  # PVE's figure
    first_pass = transfer_progress([RESENDING.replace("9.0 GiB of", "2.0 GiB of")])
    assert first_pass is not None and not first_pass.resending
    assert first_pass.seconds_left == 6 * 2**30 / (100 * 2**20)
    quiet = transfer_progress([RESENDING.split(", VM dirties")[0]])
    assert quiet is not None and quiet.dirty_rate == 0
    # not named: at most the stream's rate; 1 GiB re-sent within 64 s: at least 16 MiB/s
    assert quiet.dirty_bounds(64.0) == (16 * 2**20, 100 * 2**20)


def test_a_first_pass_line_without_a_dirty_rate_bounds_nothing() -> None:
    """QEMU measures the dirty rate first at the end of the first pass, so PVE's lines of
    that pass never name it, however fast the guest writes: no upper bound from them."""
    first_pass = transfer_progress([RESENDING.replace("9.0 GiB of", "2.0 GiB of").split(", VM")[0]])
    assert first_pass is not None and not first_pass.resending
    assert first_pass.dirty_bounds(20.0) == (0.0, float("inf"))


def test_a_resending_transfer_is_looked_at_again_not_watched_every_poll() -> None:
    async def scenario() -> None:
        pve = FakePve()
        rt, kube, clock, upid = await started(pve, POLL)
        pve.logs[upid] = [RESENDING]
        clock[0] += 20  # past the first probe
        await settle(rt)
        assert pve.log_reads == 1
        reads = pve.task_list_reads
        polls = 30  # one minute of polls while the guest's pages are re-sent
        for _ in range(polls):
            pve.logs[upid].append(RESENDING)  # PVE logs progress every second
            clock[0] += POLL
            await settle(rt)
            # no end is predicted, so no end-phase slot is held on the target
            assert rt.engine.pending_handshakes("pve2", clock[0]) == 0
        # task lists only as the safety net: the log reads follow the transfer
        assert pve.task_list_reads - reads <= polls * POLL // SAFETY_NET_SECONDS + 1
        assert pve.log_reads <= 4  # looks spaced by a share of the time run so far

        pve.logs[upid].append("2026-01-01 00:02:40 migration status: completed")
        for _ in range(20):  # the next look sees the end phase
            clock[0] += POLL
            await settle(rt)
            if rt.engine.pending_handshakes("pve2", clock[0]):
                break
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 1
        pve.finish(upid, "OK")
        clock[0] += POLL
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_a_completed_line_takes_the_stream_off_its_links() -> None:
    """`migration status: completed` (qemu-server `src/PVE/QemuMigrate.pm` phase2) is the
    certain transfer end: the engine stops counting the stream on its links (a predicted end
    does not, as the stream may still send)."""

    async def scenario() -> None:
        pve = FakePve()
        rt, _, clock, upid = await started(pve, POLL)
        ended = transfer_ends_told(rt)
        pve.logs[upid] = [RESENDING.replace("9.0 GiB of", "2.0 GiB of")]
        clock[0] += 20  # past the first probe
        await settle(rt)
        assert pve.log_reads == 1 and ended == []  # progress only, however near its end
        pve.logs[upid].append("2026-01-01 00:01:30 migration status: completed")
        for _ in range(30):
            clock[0] += POLL
            await settle(rt)
            if ended:
                break
        assert ended == [REQUEST.key]

    asyncio.run(scenario())
