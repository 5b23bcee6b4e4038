"""A cluster runtime closed under work in flight (its ProxmoxCluster deleted together with
its VMMigrations, or its connection replaced): calls already made end normally, later ones
fail as PVE errors every caller handles, and a cancel racing the close completes."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.errors import PveUnreachable
from tests.unit.test_runtime_cancel import StoppablePve
from tests.unit.test_runtime_cluster import REQUEST, runtime, settle


class Blocking:
    """A fake's calls as PveClient's blocking ones (run in AsyncPveClient's pool); the
    calls named in `held` wait for `gate`."""

    def __init__(self, fake: Any, held: tuple[str, ...] = ()) -> None:
        self.fake, self.held = fake, held
        self.can_choose_migration_type = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.fake, name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            if name in self.held:
                self.entered.set()
                self.gate.wait(10)
            result = call(*args, **kwargs)
            return asyncio.run(result) if inspect.iscoroutine(result) else result

        return blocking


class Pool:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()

    def slow(self) -> str:
        self.entered.set()
        self.gate.wait(10)
        return "slow"

    def quick(self) -> str:
        return "quick"


def test_calls_made_before_close_end_normally_and_later_ones_fail_as_pve_errors() -> None:
    """A call queued behind a busy pool when the client closes must not end its caller with
    a CancelledError: in a kopf daemon that ends the daemon for good."""
    pool = Pool()
    client = AsyncPveClient(pool, max_workers=1)  # type: ignore[arg-type]

    async def scenario() -> tuple[str, str]:
        running = asyncio.ensure_future(client._run(pool.slow))
        queued = asyncio.ensure_future(client._run(pool.quick))
        await asyncio.to_thread(pool.entered.wait, 10)
        client.close()
        pool.gate.set()
        with pytest.raises(PveUnreachable, match="connection is closed"):
            await client._run(pool.quick)
        return await running, await queued

    assert asyncio.run(scenario()) == ("slow", "quick")


def test_a_cancel_in_flight_when_the_cluster_closes_completes_and_says_what_it_could_not_do() -> (
    None
):
    """Deleting a ProxmoxCluster with its VMMigrations: a cancel that got the runtime just
    before its daemon closed it ends with a status (the kopf handler succeeds), instead of
    failing on the closed pool and being retried a minute later."""
    pve = StoppablePve("migration problems", "migrate", root=True)

    async def scenario() -> tuple[str, dict[str, Any], str]:
        rt, kube = runtime(pve, [0x6B000000 + 5.0])
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert len(pve.posts) == 1
        blocking = Blocking(pve, held=("stop_task",))
        rt.client = AsyncPveClient(blocking)  # type: ignore[arg-type]
        cancel = asyncio.ensure_future(rt.cancel(REQUEST))
        await asyncio.to_thread(blocking.entered.wait, 10)  # the DELETE is out
        await rt.close()  # the ProxmoxCluster's daemon ends
        blocking.gate.set()
        message = await cancel
        return message, kube.patches[-1], await rt.cancel(REQUEST)

    message, status, later = asyncio.run(scenario())
    assert pve.stops  # the DELETE reached PVE
    assert "stopping it failed" in message and "connection is closed" in message
    assert status["phase"] == "Cancelled" and status["message"] == message
    assert later == "nothing to cancel: ProxmoxCluster ns/lab is disconnected"


def test_the_engine_loop_ends_when_its_runtime_closes() -> None:
    """Even if its cancellation is lost (Python 3.11's wait_for drops one that comes as the
    wake-up it waits for is set), a closed runtime's loop ticks no more."""
    pve = StoppablePve("migration problems", None, root=False)

    async def scenario() -> None:
        rt, _ = runtime(pve, [0x6B000000 + 5.0])
        rt.task_poll_seconds = 60.0
        loop = asyncio.create_task(rt.run())
        await asyncio.sleep(0.05)  # asleep until its next poll
        await rt.close()
        await asyncio.wait_for(loop, 1.0)

    asyncio.run(scenario())


class HeldKube:
    """Status writes that answer once `answer` is set."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.answer = asyncio.Event()

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        self.patches.append(status)
        await self.answer.wait()
        return {"status": status}


def test_a_status_write_in_flight_is_not_sent_again_by_the_loop() -> None:
    """The engine loop's flush retries writes the API server refused; one that is merely
    out (its answer not back) was sent a second time, logged as written after a failure."""
    pve = StoppablePve("migration problems", None, root=False)

    async def scenario() -> list[dict[str, Any]]:
        rt, _ = runtime(pve, [0x6B000000 + 5.0])
        kube = HeldKube()
        rt.kube = kube
        accepting = asyncio.ensure_future(rt.accept(REQUEST, {}))  # writes Queued
        while not kube.patches:
            await asyncio.sleep(0)
        flushing = asyncio.ensure_future(rt.journal.flush())  # the loop's tick meanwhile
        await asyncio.sleep(0.01)
        kube.answer.set()
        await asyncio.gather(accepting, flushing)
        return kube.patches

    patches = asyncio.run(scenario())
    assert [patch["phase"] for patch in patches] == ["Queued"]
