"""Fewer PVE requests per migration without seeing ends later (issue 13, tenth pass): a task
that alone may end on its node has its log read instead of the node's task list (the same
one request, which also shows the certain transfer end); tasks ending together, or beside a
transfer whose end is unknown, share the list; an HA hand-off is looked for once per HA
round; a transfer past the guest's memory in use is looked at again after 6 s, not 10.5."""

from __future__ import annotations

import asyncio

from proxmigrate.engine import Job
from proxmigrate.runtime.attempt import Attempt
from proxmigrate.runtime.cluster import MigrationRequest
from proxmigrate.runtime.look_schedule import HANDOFF_LIST_SECONDS, ending_alone
from proxmigrate.runtime.predictions import MAY_END_RECHECK_SECONDS
from tests.unit.test_runtime_cluster import (
    CHILD,
    FIRST_LOOK,
    REQUEST,
    FakePve,
    HaPve,
    _ha_scenario,
    settle,
    started,
    transfer_ends_told,
)
from tests.unit.test_runtime_end_seen import succeeded
from tests.unit.test_runtime_tracking_requests import phase

POLL = 2.0
# 1.5 of the guest's 2 GiB in use sent at 100 MiB/s: its earliest end 5.1 s after the look
NEAR_END = (
    "2026-01-01 00:00:11 migration active, transferred 1.5 GiB of 4.0 GiB VM-state, 100.0 MiB/s"
)
COMPLETED = "2026-01-01 00:00:17 migration status: completed"


def test_a_task_ending_alone_is_looked_at_in_its_log_which_shows_the_transfer_end() -> None:
    async def scenario() -> None:
        pve = FakePve()
        rt, kube, clock, upid = await started(pve, POLL)
        ended = transfer_ends_told(rt)
        pve.logs[upid] = [NEAR_END]
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert pve.log_reads == 1
        pve.logs[upid].append(COMPLETED)
        lists = pve.task_list_reads
        for _ in range(4):  # past the predicted end (5.1 s) and the shortest end phase
            clock[0] += POLL
            await settle(rt)
        assert ended == [REQUEST.key]  # a task list would not have shown it
        assert pve.log_reads == 2  # one look, at the first poll it may have ended
        pve.finish(upid, "OK")
        for _ in range(2):
            clock[0] += POLL
            await settle(rt)
        assert succeeded(kube.patches)
        assert pve.task_list_reads == lists

    asyncio.run(scenario())


def _attempt(name: str, upid: str, ending_at: float, probe_at: float | None) -> Attempt:
    request = MigrationRequest("ns", name, name, 100, "pve2")
    attempt = Attempt(request, {})
    attempt.job = Job(name, 100, "pve1", "pve2")
    attempt.upid, attempt.ending_at, attempt.probe_at = upid, ending_at, probe_at
    attempt.alive_at = 990.0
    return attempt


UPID_A = "UPID:pve1:00001001:00002000:6B000000:qmigrate:100:root@pam!t:"
UPID_B = "UPID:pve1:00001002:00002000:6B000000:qmigrate:101:root@pam!t:"
UPID_C = "UPID:pve3:00001003:00002000:6B000000:qmigrate:102:root@pam!t:"


def test_tasks_ending_together_or_beside_an_unknown_end_share_their_node_list() -> None:
    now = 1000.0
    ending = _attempt("a", UPID_A, ending_at=990.0, probe_at=None)
    far = _attempt("b", UPID_B, ending_at=1100.0, probe_at=1070.0)  # predicted, looked at first
    assert ending_alone([ending], [ending, far], set(), set(), now) == {"ns/a"}
    both = _attempt("b", UPID_B, ending_at=990.0, probe_at=None)
    assert (
        ending_alone([ending, both], [ending, both], set(), set(), now) == set()
    )  # one list sees both
    resending = _attempt("b", UPID_B, ending_at=1010.0, probe_at=1010.0)  # end not in the log
    assert (
        ending_alone([ending], [ending, resending], set(), set(), now) == set()
    )  # a list watches it
    elsewhere = _attempt("c", UPID_C, ending_at=1010.0, probe_at=1010.0)
    assert ending_alone([ending], [ending, elsewhere], set(), set(), now) == {"ns/a"}
    assert (
        ending_alone([ending], [ending], {"pve1"}, set(), now) == set()
    )  # listed for a lost answer
    ending.alive_at = now - 120.0  # the safety net is a task list: a killed worker
    assert ending_alone([ending], [ending], set(), set(), now) == set()


def test_an_ha_hand_off_is_looked_for_once_a_round_not_every_poll() -> None:
    async def scenario() -> None:
        pve = HaPve(hastate="migrate")  # the LRM is at max_workers: no qmigrate for a minute
        rt, _, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        for _ in range(30):
            clock[0] += POLL
            await settle(rt)
        assert pve.task_list_reads <= 1 + 60 / HANDOFF_LIST_SECONDS + 1  # every poll: 30
        pve.task_rows.append({"upid": CHILD, "starttime": 0x6B000005 + 60})
        for _ in range(int(HANDOFF_LIST_SECONDS / POLL)):
            clock[0] += POLL
            await settle(rt)
        assert rt.attempts[REQUEST.key].upid == CHILD  # found within a round

    asyncio.run(scenario())


def test_a_transfer_past_the_memory_in_use_is_looked_at_again_soon() -> None:
    async def scenario() -> None:
        pve = FakePve()
        rt, _, clock, upid = await started(pve, POLL)
        past = NEAR_END.replace("1.5 GiB of", "2.5 GiB of")  # the guest uses 2 GiB
        pve.logs[upid] = [past]
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert pve.log_reads == 1
        for _ in range(int(MAY_END_RECHECK_SECONDS / POLL)):
            pve.logs[upid].append(past)
            clock[0] += POLL
            await settle(rt)
        assert pve.log_reads == 2  # it may end any moment: 10.5 s between looks were 5 late

    asyncio.run(scenario())


def test_a_lone_task_killed_without_an_end_line_is_seen_in_its_node_list_soon() -> None:
    """Its log then shows nothing new, like a quiet end phase: the next look is its node's
    task list, which says `unexpected status` (pve-common UPID.pm read_status), not the
    two-minute safety net."""

    async def scenario() -> None:
        pve = FakePve()
        rt, kube, clock, upid = await started(pve, POLL)
        pve.logs[upid] = [NEAR_END]
        clock[0] += FIRST_LOOK
        await settle(rt)
        for row in pve.task_rows:  # SIGKILL: no end line in the log
            row["status"], row["endtime"] = "unexpected status", 0x6B000010
        for _ in range(4 + 2):  # to its predicted end, then a log read and a list
            clock[0] += POLL
            await settle(rt)
        assert phase(kube) in ("Queued", "Failed")  # retried or failed, no longer Running

    asyncio.run(scenario())


def test_an_ha_hand_off_is_looked_for_once_a_round_of_the_node_clock() -> None:
    """pvesim at `--time-scale 20`: its HA rounds last half a second of ours."""

    async def scenario() -> None:
        pve = HaPve(hastate="migrate")
        rt, _, clock = _ha_scenario(pve)
        node = rt.node_clocks.of("pve1")  # stamps 20 s apart a second apart: rate 20
        node.requested(clock[0] - 2.0, 0.0)
        node.read(clock[0] - 1.0, 21.0)
        assert rt.node_clocks.rate("pve1") >= 20
        await rt.accept(REQUEST, {})
        await settle(rt)
        poll = 0.25
        rt.task_poll_seconds = poll
        for _ in range(4):
            clock[0] += poll
            await settle(rt)
        pve.task_rows.append({"upid": CHILD, "starttime": 0x6B000005})
        for _ in range(int(HANDOFF_LIST_SECONDS / 20 / poll) + 1):
            clock[0] += poll
            await settle(rt)
        assert rt.attempts[REQUEST.key].upid == CHILD

    asyncio.run(scenario())
