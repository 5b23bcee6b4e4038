"""A task that may end now is looked for every poll only while a queued job may wait for
what its end frees (`MigrationEngine.awaits_end`); else once its last sign of life is
`UNAWAITED_END_SECONDS` old (bench/RESULTS.md, issue 13, twenty-sixth pass)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from proxmigrate.engine import EnginePolicy, Job, MaxStartups, MigrationEngine, link_payload
from proxmigrate.engine.jobs import Outcome
from proxmigrate.failures import Reason
from proxmigrate.runtime.attempt import Attempt, MigrationRequest
from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.runtime.look_schedule import UNAWAITED_END_SECONDS, ending_alone, needs_list
from tests.unit.test_runtime_cluster import FIRST_LOOK, FakePve, runtime, settle, started
from tests.unit.test_runtime_end_seen import succeeded
from tests.unit.test_runtime_lone_look import UPID_A, UPID_B, _attempt

POLL = 2.0
START = "2026-01-01 00:00:00 starting migration of VM 100 to node 'pve2' (10.0.0.2)"
# 1.5 of the guest's 2 GiB in use sent at 100 MiB/s: its earliest end 5.1 s after the look
NEAR_END = (
    "2026-01-01 00:00:11 migration active, transferred 1.5 GiB of 4.0 GiB VM-state, 100.0 MiB/s"
)
COMPLETED = "2026-01-01 00:00:17 migration status: completed"
MIB = 2**20


async def requests_to_see_the_end(awaited: bool | None) -> tuple[int, float]:
    """The requests from the look that shows the transfer completed (17 s after the
    request) to the one that shows the task ended, 4 s later, and when that end is seen.
    `awaited`: what the engine answers `awaits_end` (None: the engine's own answer)."""
    pve = FakePve()
    rt, kube, clock, upid = await started(pve, POLL)
    if awaited is not None:
        rt.engine.awaits_end = lambda key, now: awaited  # type: ignore[method-assign]
    pve.logs[upid] = [START, NEAR_END]
    clock[0] += FIRST_LOOK
    await settle(rt)
    pve.logs[upid].append(COMPLETED)
    while pve.log_reads < 2:  # the look at the first poll it may have ended: completed
        clock[0] += POLL
        await settle(rt)
    before = pve.log_reads + pve.task_list_reads
    clock[0] += POLL
    await settle(rt)
    pve.finish(upid, "OK")  # its end phase ends between two polls
    while not succeeded(kube.patches):
        clock[0] += POLL
        await settle(rt)
    return pve.log_reads + pve.task_list_reads - before, clock[0] - 1000.0


def test_an_end_no_queued_job_waits_for_is_looked_for_once() -> None:
    """Nothing queued: one log read 6 s after the completion line sees the end. Fails on
    the old code: a lone look every poll (nothing new in the end phase), then the list."""
    assert asyncio.run(requests_to_see_the_end(None)) == (1, 23.0)
    assert UNAWAITED_END_SECONDS == 6.0  # the completion line is stamped 17 s in


def test_an_end_a_queued_job_waits_for_is_looked_for_every_poll() -> None:
    """Seen at the same poll either way; awaited, the end phase costs a look each poll."""
    assert asyncio.run(requests_to_see_the_end(True)) == (2, 23.0)
    assert asyncio.run(requests_to_see_the_end(False)) == (1, 23.0)


POLICY = EnginePolicy(
    ssh_max_startups=MaxStartups.parse("1000"),
    handshake_safety=1.0,
    start_spread_seconds=0.0,
    handshake_seconds=0.01,
    node_link_capacity=tuple((n, link_payload(100)) for n in ("pve1", "pve2", "pve3")),
)


def engine(**changes: Any) -> MigrationEngine:
    return MigrationEngine(replace(POLICY, **changes))


def running(eng: MigrationEngine, *jobs: Job) -> None:
    for job in jobs:
        eng.submit(job, 0.0)
        assert eng.poll(1.0) == [job]
        eng.notify_tunnel_up(job.key, 1.0)
        eng.observe_rate(job.key, 500 * MIB, now=1.0)


A = Job("a", 100, "pve1", "pve2")
B = Job("b", 101, "pve1", "pve3")


def test_no_end_is_awaited_with_nothing_queued_or_only_a_job_in_its_backoff() -> None:
    eng = engine()
    running(eng, A, B)
    eng.notify_transfer_ended(A.key)
    assert not eng.awaits_end(A.key, 2.0)  # nothing queued
    assert eng.finish(B.key, 2.0, Outcome(False, Reason.SSH_DROPPED, True)).kind == "retry"
    assert not eng.awaits_end(A.key, 2.0)  # B waits for its backoff, not for A
    assert not eng.awaits_end("gone", 2.0)


def test_an_end_is_awaited_under_the_cluster_cap_or_its_source_or_target_cap() -> None:
    capped = engine(max_parallel=2)
    running(capped, A, B)
    capped.submit(Job("c", 102, "pve3", "pve2"), 2.0)
    capped.notify_transfer_ended(A.key)
    assert capped.awaits_end(A.key, 2.0)  # fails on the old code: no such method
    per_source = engine(max_parallel_per_source=2)
    running(per_source, A, B)
    per_source.submit(Job("c", 102, "pve1", "pve2"), 2.0)
    per_source.notify_transfer_ended(A.key)
    assert per_source.awaits_end(A.key, 2.0)
    per_target = engine(max_parallel_per_target=1)
    running(per_target, A, B)
    per_target.submit(Job("c", 102, "pve3", "pve2"), 2.0)
    per_target.notify_transfer_ended(A.key)
    assert per_target.awaits_end(A.key, 2.0)
    assert not per_target.awaits_end(B.key, 2.0)  # B shares no limit with C
    free = engine()
    running(free, A, B)
    free.submit(Job("c", 102, "pve3", "pve2"), 2.0)  # another source: starts at the poll
    free.notify_transfer_ended(A.key)
    assert not free.awaits_end(A.key, 2.0)


def test_a_stream_whose_link_share_a_queued_job_waits_for_is_awaited_until_it_ended() -> None:
    """A running stream holds its share of its source's link until its log shows the
    transfer ended (rules 7, 8): a job of that source held by the link waits for it."""
    eng = engine(min_stream_rate=400 * MIB, node_link_capacity=(("pve1", link_payload(10)),))
    running(eng, A, B)
    waiting = Job("c", 102, "pve1", "pve2")
    eng.submit(waiting, 2.0)
    assert eng.poll(2.0) == []  # a third stream would leave each below 400 MiB/s
    assert eng.awaits_end(A.key, 2.0)
    eng.notify_transfer_ended(B.key)
    assert not eng.awaits_end(B.key, 2.0)  # off its link: its end frees nothing more
    assert eng.poll(2.0) == [waiting]


HAMIGRATE = "UPID:pve1:00002000:00002000:6B000000:hamigrate:101:root@pam!t:"


def test_every_stream_on_a_link_that_holds_a_queued_job_is_awaited() -> None:
    """A third stream is refused while two others share the source's link (each below
    `min_stream_rate`), and fits beside one: no single end frees it, two do. Fails if
    each stream is judged by whether its end alone would let the job fit."""
    capacity = link_payload(10)
    eng = engine(min_stream_rate=0.4 * capacity, node_link_capacity=(("pve1", capacity),))
    streams = [A, B, Job("c", 102, "pve1", "pve2")]
    for job in streams:
        eng.adopt_running(job, 1.0)
    waiting = Job("d", 103, "pve1", "pve3")
    eng.submit(waiting, 2.0)
    assert eng.poll(2.0) == []
    assert all(eng.awaits_end(job.key, 2.0) for job in streams)
    eng.notify_transfer_ended(A.key)
    assert eng.poll(2.0) == []  # one end freed no room
    eng.notify_transfer_ended(B.key)
    assert eng.poll(2.0) == [waiting]


def tracked(rt: ClusterRuntime, vmid: int, upid: str) -> Attempt:
    request = MigrationRequest("ns", f"m{vmid}", f"m{vmid}", vmid, "pve2")
    attempt = rt.attempts.admit(request, {}, 990.0)
    assert attempt is not None
    attempt.queue(Job(request.key, vmid, "pve1", "pve2"), 990.0)
    attempt.start(990.0)
    attempt.track(upid, probe_at=None)
    attempt.alive_at = 998.0
    return attempt


def test_an_unawaited_end_is_listed_every_poll_beside_an_awaited_ha_hand_off() -> None:
    """Its node's list also finds a hand-off's `qmigrate`, listed alone once an HA round:
    found later, its first look and its end come later. Fails if only the engine's answer
    decides."""
    rt, _ = runtime(FakePve(), [1000.0])
    rt.engine.awaits_end = lambda key, now: False  # type: ignore[method-assign]
    ending = tracked(rt, 100, UPID_A)
    ending.ending_at = 990.0  # the predicted end and the shortest end phase are past
    assert not needs_list(rt, ending, 1000.0)
    assert needs_list(rt, ending, 998.0 + UNAWAITED_END_SECONDS)
    handoff = tracked(rt, 101, HAMIGRATE)
    handoff.ha_queued_at = 996.0
    assert not needs_list(rt, handoff, 1000.0)  # its own list: once a round
    assert needs_list(rt, ending, 1000.0)


def test_a_task_ending_beside_an_unawaited_end_shares_the_list_with_it() -> None:
    """One list sees both ends (and any other task's of the node) for the request a lone
    log read would cost. Fails on the old code: `ending_alone` knew only the listed."""
    now = 1000.0
    awaited = _attempt("a", UPID_A, ending_at=990.0, probe_at=None)
    unawaited = _attempt("b", UPID_B, ending_at=990.0, probe_at=None)
    followed = [awaited, unawaited]
    assert ending_alone([awaited], followed, set(), {"ns/a"}, now) == {"ns/a"}
    assert ending_alone([awaited], followed, set(), {"ns/a", "ns/b"}, now) == set()
