"""The engine loop survives every error, and no bookkeeping is lost to a failed status write."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from typing import Any

from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.inventory import Inventory
from proxmigrate.pve.errors import PveUnreachable
from proxmigrate.runtime import outcomes
from proxmigrate.runtime.attempt import AttemptState
from proxmigrate.runtime.cluster import ClusterRuntime
from tests.unit.test_runtime_cluster import (
    FIRST_LOOK,
    REQUEST,
    FakeKube,
    FakePve,
    runtime,
    settle,
)


class RefusingKube(FakeKube):
    """An API server that answers 500 to every status write while `refusing`."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False
        self.refused = 0

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        if self.refusing:
            self.refused += 1
            raise RuntimeError("(500) Internal Server Error")
        return await super().patch_status(plural, ns, name, status)


def _refusing_runtime(pve: FakePve, clock: list[float]) -> tuple[ClusterRuntime, RefusingKube]:
    rt, _ = runtime(pve, clock)
    kube = RefusingKube()
    rt.kube = kube
    return rt, kube


def test_a_refused_final_write_is_kept_and_written_once_the_api_server_answers() -> None:
    async def scenario() -> None:
        pve = FakePve()
        clock = [1000.0]
        rt, kube = _refusing_runtime(pve, clock)
        await rt.accept(REQUEST, {})
        await settle(rt)
        pve.finish(pve.task_rows[0]["upid"], "OK")
        kube.refusing = True
        clock[0] += FIRST_LOOK
        await settle(rt)  # the tick goes on: the write is kept, the slot is free
        assert kube.refused >= 1
        assert rt.engine.snapshot(clock[0]).running_per_target.get("pve2", 0) == 0
        assert kube.patches[-1].get("phase") != "Succeeded"
        kube.refusing = False
        await rt.journal.flush()
        assert kube.patches[-1]["phase"] == "Succeeded"
        await rt.journal.flush()
        assert sum(1 for p in kube.patches if p.get("phase") == "Succeeded") == 1

    asyncio.run(scenario())


def test_a_refused_intent_is_not_recorded_and_nothing_is_posted() -> None:
    async def scenario() -> None:
        pve = FakePve()
        clock = [1000.0]
        rt, kube = _refusing_runtime(pve, clock)
        await rt.accept(REQUEST, {})
        kube.refusing = True
        await settle(rt)
        assert pve.posts == []
        kube.refusing = False
        clock[0] += 10  # past the retry backoff
        await settle(rt)
        assert len(pve.posts) == 1
        intent = next(p for p in kube.patches if p.get("phase") == "Running")
        assert intent["attemptCount"] == 1 and len(intent["attempts"]) == 1

    asyncio.run(scenario())


class FailingTasksPve(FakePve):
    """Its task list raises something no one expects, `failures` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def tasks(self, node: str, **kwargs: Any) -> list[dict[str, Any]]:
        if self.failures > 0:
            self.failures -= 1
            raise KeyError("status")
        return await super().tasks(node, **kwargs)

    async def task_log(self, node: str, upid: str, start: int = 0, **kw: Any) -> list[str]:
        if self.failures > 0:
            self.failures -= 1
            raise KeyError("n")
        return await super().task_log(node, upid, start, **kw)


def test_the_loop_survives_an_unexpected_error_reports_it_and_carries_on() -> None:
    async def scenario() -> None:
        pve = FailingTasksPve(failures=1)
        clock = [1000.0]
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        loop = asyncio.create_task(rt.run())
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                clock[0] += 1  # on to the task's first look
                if rt.loop_error:
                    break
            assert rt.loop_error is not None and "KeyError" in rt.loop_error
            assert not loop.done()
            pve.finish(pve.task_rows[0]["upid"], "OK")
            for _ in range(400):
                await asyncio.sleep(0.01)
                if kube.patches[-1].get("phase") == "Succeeded":
                    break
            assert kube.patches[-1]["phase"] == "Succeeded"
            assert rt.loop_error is None and rt.failed_ticks == 0
        finally:
            loop.cancel()

    asyncio.run(scenario())


class UnreadablePve(FakePve):
    def __init__(self) -> None:
        super().__init__()
        self.unreachable = False

    async def inventory(self) -> Inventory:
        if self.unreachable:
            raise PveUnreachable("no endpoint answered")
        return await super().inventory()


def test_a_failed_pve_read_while_judging_an_end_keeps_the_slot() -> None:
    async def scenario() -> None:
        pve = UnreadablePve()
        rt, kube = runtime(pve, [1000.0])
        await rt.accept(REQUEST, {})
        await settle(rt)
        running = rt.attempts[REQUEST.key]
        pve.unreachable = True
        unknown = Failure(Reason.UNKNOWN, True, FailurePhase.PHASE2, "lost", None)
        with contextlib.suppress(PveUnreachable):
            await outcomes.finish(rt, running, unknown)
        assert running.state is AttemptState.TRACKING  # judged again later, not dropped
        pve.unreachable = False
        pve.vm_node = "pve2"
        await outcomes.finish(rt, running, unknown)
        assert running.state is AttemptState.ENDED
        assert kube.patches[-1]["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_an_intent_whose_post_never_happened_is_taken_back_on_resume() -> None:
    async def scenario() -> None:
        clock = [0x6B000000 + 5.0]
        pve = FakePve()  # no task: the operator died between the intent and the POST
        rt, kube = runtime(pve, clock)
        requested = datetime.datetime.fromtimestamp(0x6B000000 - 2, datetime.UTC)
        intent = {
            "phase": "Running",
            "sourceNode": "pve1",
            "attemptCount": 1,
            "attempts": [{"startTime": to_rfc3339(requested), "outcome": "Running"}],
        }
        await rt.accept(REQUEST, intent)
        await settle(rt)
        assert len(pve.posts) == 1
        running = [p for p in kube.patches if p.get("phase") == "Running"][-1]
        assert running["attemptCount"] == 1
        assert len(running["attempts"]) == 1

    asyncio.run(scenario())


def test_an_ended_migration_is_not_taken_again_from_a_stale_listing() -> None:
    """The cluster daemon adopts what a listing shows unfinished; one taken before the
    final status was written must not start the migration over."""

    async def scenario() -> None:
        pve = FakePve()
        clock = [1000.0]
        rt, kube = runtime(pve, clock)
        assert await rt.accept(REQUEST, {})
        await settle(rt)
        upid = pve.task_rows[0]["upid"]
        pve.finish(upid, "OK")
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Succeeded"
        stale = {"phase": "Running", "sourceNode": "pve1", "upid": upid, "attemptCount": 1}
        assert not await rt.accept(REQUEST, stale)
        await settle(rt)
        assert len(pve.posts) == 1
        assert sum(1 for p in kube.patches if p.get("phase") == "Succeeded") == 1

    asyncio.run(scenario())


def test_a_new_object_of_a_reused_name_is_taken_despite_the_old_ones_leftovers() -> None:
    """A drain withdraws a queued move and creates its guest's VMMigration again under the
    same name: what is left of the old object (an unwritten or written end) is not the new
    one's."""

    async def scenario() -> None:
        pve = FakePve()
        rt, kube = _refusing_runtime(pve, [1000.0])
        assert await rt.accept(REQUEST, {})
        assert rt.withdraw(REQUEST.key)
        kube.refusing = True
        await rt.cancel(REQUEST)  # its Cancelled status waits to be written
        again = dataclasses.replace(REQUEST, uid="uid-2")
        assert await rt.accept(again, {})
        kube.refusing = False
        await rt.cancel(again)
        third = dataclasses.replace(REQUEST, uid="uid-3")
        assert await rt.accept(third, {})  # the written end was uid-2's

    asyncio.run(scenario())
