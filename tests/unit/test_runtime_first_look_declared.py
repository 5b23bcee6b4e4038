"""A migration whose source's and target's links are declared (`nodeLinks`) has its log
first read one task poll later (runtime/predictions.py `first_look_deferral`), on time after
all while the engine holds its source's next start for its rate (bench/RESULTS.md, issue 13,
twenty-third pass)."""

from __future__ import annotations

import asyncio
from typing import Any

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.engine import EnginePolicy, Job, MaxStartups, MigrationEngine, link_payload
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.runtime.cluster import ClusterRuntime
from tests.unit.test_runtime_cluster import GIB, REQUEST, FakePve, runtime, settle

POLL = 2.0
FIRST_LOOK = 10.5  # 2 x the start window
MIB = 2**20


class StoppedGuestPve(FakePve):
    async def inventory(self) -> Inventory:
        nodes = tuple(NodeInfo(n, True, 64 * GIB, 8 * GIB, 16) for n in ("pve1", "pve2"))
        return Inventory(nodes, (VMInfo(100, "web", "pve1", False, 4 * GIB, 0),), taken_at=0.0)


async def requested(
    links: list[dict[str, Any]], pve: FakePve | None = None
) -> tuple[ClusterRuntime, FakePve, list[float]]:
    """A runtime polling every POLL seconds, `links` declared, that POSTed REQUEST at 1000."""
    pve = pve or FakePve()
    clock = [1000.0]
    rt, _ = runtime(pve, clock)
    rt.task_poll_seconds = POLL
    spec = {"retry": {"backoffSeconds": 1, "maxBackoffSeconds": 2}, "nodeLinks": links}
    rt.update_policy(MigrationPolicySpec.from_spec(spec))
    await rt.accept(REQUEST, {})
    await settle(rt)
    return rt, pve, clock


async def log_reads_after(links: list[dict[str, Any]], seconds: float) -> int:
    rt, pve, clock = await requested(links)
    clock[0] += seconds
    await settle(rt)
    return pve.log_reads


BOTH = [{"node": "pve1", "gbps": 10}, {"node": "pve2", "gbps": 10}]


def test_a_migration_whose_links_are_declared_is_first_read_a_poll_later() -> None:
    """Fails on the old code: its log was read at 2 x the start window."""
    assert asyncio.run(log_reads_after(BOTH, FIRST_LOOK + 0.5)) == 0
    assert asyncio.run(log_reads_after(BOTH, FIRST_LOOK + POLL + 0.5)) == 1


def test_a_migration_with_a_link_undeclared_is_read_on_time() -> None:
    """Where a link is only told by the streams' rates, the engine learns it from them."""
    assert asyncio.run(log_reads_after([], FIRST_LOOK + 0.5)) == 1
    source_only = [{"node": "pve1", "gbps": 10}]
    assert asyncio.run(log_reads_after(source_only, FIRST_LOOK + 0.5)) == 1


def test_a_late_first_look_is_made_on_time_when_its_source_waits_for_its_rate() -> None:
    """The engine holds a source's next start while `unmeasured_streams_per_source` of its
    streams have no rate (rule 7): a look deferred then would hold it a poll longer. Fails
    if `look_schedule.needs_log` ignores `awaits_rate`."""

    async def scenario() -> None:
        rt, pve, clock = await requested(BOTH)
        awaited = {REQUEST.key: True}
        rt.engine.awaits_rate = lambda key: awaited.get(key, False)  # type: ignore[method-assign]
        clock[0] += FIRST_LOOK + 0.5
        await settle(rt)
        assert pve.log_reads == 1

    asyncio.run(scenario())


def test_a_stopped_guest_is_read_once_its_start_phase_is_over_links_or_not() -> None:
    """No RAM transfer, no rate to wait for or to defer: read at the start window (5.25 s)
    even while its source is held for rates."""

    async def scenario() -> None:
        rt, pve, clock = await requested(BOTH, StoppedGuestPve())
        rt.engine.awaits_rate = lambda key: True  # type: ignore[method-assign]
        clock[0] += 4.0
        await settle(rt)
        assert pve.log_reads == 0
        clock[0] += 1.5
        await settle(rt)
        assert pve.log_reads == 1

    asyncio.run(scenario())


def engine(max_parallel: int = 32) -> MigrationEngine:
    policy = EnginePolicy(
        max_parallel=max_parallel,
        ssh_max_startups=MaxStartups.parse("1000"),
        handshake_safety=1.0,
        start_spread_seconds=0.0,
        handshake_seconds=0.01,
        min_stream_rate=128 * MIB,
        unmeasured_streams_per_source=4,
        node_link_capacity=(("pve1", link_payload(10)), ("pve2", link_payload(10))),
    )
    return MigrationEngine(policy)


def start(eng: MigrationEngine, jobs: int) -> list[Job]:
    for index in range(jobs):
        eng.submit(Job(f"m{index}", 100 + index, "pve1", "pve2"), 0.0)
    started: list[Job] = []
    for step in range(20):
        started += eng.poll(step * 0.05)
    return started


def test_the_engine_awaits_a_rate_only_where_unmeasured_streams_hold_the_source() -> None:
    eng = engine()
    started = start(eng, 6)
    assert len(started) == 4  # the fifth waits for rates
    assert all(eng.awaits_rate(job.key) for job in started)
    eng.observe_rate(started[0].key, 200 * MIB)
    assert not eng.awaits_rate(started[0].key)  # its rate is seen
    assert not eng.awaits_rate(started[1].key)  # 3 unmeasured: the source may grow


def test_the_engine_awaits_no_rate_when_the_cluster_cap_or_an_empty_queue_holds() -> None:
    capped = engine(max_parallel=4)
    assert not any(capped.awaits_rate(job.key) for job in start(capped, 6))
    idle = engine()
    assert not any(idle.awaits_rate(job.key) for job in start(idle, 4))
