"""Ending cleanly: reconcile loops end when kopf stops their daemon, not when their sleep
would have."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import FlagSetter

from proxmigrate.api.constants import NODEDRAINS
from proxmigrate.controllers import reconcile
from proxmigrate.controllers.registry import Registry


class Idle(reconcile.Reconciler):
    """A pass with nothing to do: the loop then sleeps RESYNC_SECONDS (600 s)."""

    plural = NODEDRAINS
    passes = 0

    async def run(self) -> None:
        Idle.passes += 1


class FakeStopped:
    """kopf's `stopped` flag as the loop reads it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def wait(self) -> Any:
        return self.event.wait()

    def set(self) -> None:
        self.event.set()


class KopfStopped:
    """kopf's own flag (what a daemon receives), set as kopf sets it."""

    def __init__(self) -> None:
        self.setter: FlagSetter[Any] = FlagSetter()
        self.waiter = self.setter.async_waiter

    def set(self) -> None:
        self.setter.set()


@pytest.mark.parametrize("flag", [FakeStopped, KopfStopped])
def test_a_sleeping_reconcile_loop_ends_as_soon_as_kopf_stops_it(
    flag: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "shared_kube", lambda: None)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "d1"}, "spec": {}})
    registry = Registry()

    async def scenario() -> None:
        stop = flag()
        stopped = stop.waiter if isinstance(stop, KopfStopped) else stop
        Idle.passes = 0
        loop = asyncio.create_task(
            reconcile.reconcile_until_stopped(Idle, body, None, registry, stopped)  # type: ignore[arg-type]
        )
        while Idle.passes < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # asleep now
        stop.set()
        await asyncio.wait_for(loop, 1.0)  # not cancelled: it returned on its own

    asyncio.run(scenario())
    assert Idle.passes == 1
    assert registry.wakers == {}


def kopf_daemon(daemon_id: str) -> Any:
    """The daemon handler kopf registered under `daemon_id`."""
    handlers = kopf.get_default_registry()._spawning.get_all_handlers()
    return next(h for h in handlers if h.id == daemon_id)


def operator_settings() -> kopf.OperatorSettings:
    """kopf's settings as the operator configures them (controllers/settings.py)."""
    from proxmigrate.controllers.settings import configure

    settings = kopf.OperatorSettings()
    configure(settings=settings)
    return settings


def cluster_daemon(memo: kopf.Memo, stopper: FlagSetter[Any]) -> asyncio.Task[None]:
    """The daemon of ProxmoxCluster ns/lab (an empty spec), started as kopf starts it."""
    from proxmigrate.controllers import clusters

    return asyncio.create_task(
        clusters.proxmox_cluster(
            name="lab",
            namespace="ns",
            spec=kopf.Spec({}),
            meta=kopf.Meta({"metadata": {"generation": 1}}),
            status=kopf.Status({}),
            memo=memo,
            stopped=stopper.async_waiter,
        )
    )


def test_a_loop_woken_as_it_is_stopped_ends_without_its_debounce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleting a NodeDrain wakes its loop (deletionTimestamp) as kopf stops it: kopf cancels
    a daemon that has not returned within a few loop cycles."""
    monkeypatch.setattr(reconcile, "shared_kube", lambda: None)
    monkeypatch.setattr(reconcile, "DEBOUNCE_SECONDS", 30.0)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "d1"}, "spec": {}})
    registry = Registry()

    async def scenario() -> None:
        stopped = FakeStopped()
        Idle.passes = 0
        loop = asyncio.create_task(
            reconcile.reconcile_until_stopped(Idle, body, None, registry, stopped)  # type: ignore[arg-type]
        )
        while Idle.passes < 1:
            await asyncio.sleep(0.01)
        registry.wake((NODEDRAINS, "ns", "d1"))
        stopped.set()
        await asyncio.wait_for(loop, 1.0)

    asyncio.run(scenario())


@pytest.mark.parametrize("daemon_id", ["node_drain", "vm_placement"])
def test_a_deleted_objects_pass_under_way_ends_before_kopf_would_cancel_it(daemon_id: str) -> None:
    """kopf's own stop of a daemon on deletion: a pass under way (e.g. a drain creating its
    VMMigrations) finishes and the loop ends on `stopped`; without a grace kopf cancelled
    it at once ("Daemon 'node_drain' is cancelled. Will escalate.")."""
    from kopf._core.engines import daemons as kopf_daemons
    from kopf._core.intents.stoppers import DaemonStoppingReason

    from proxmigrate.controllers import drains, placements  # noqa: F401 (registers them)

    handler = kopf_daemon(daemon_id)

    async def scenario() -> bool:
        stopper: FlagSetter[DaemonStoppingReason] = FlagSetter()
        ended_on_its_own = False

        async def daemon() -> None:
            nonlocal ended_on_its_own
            await asyncio.sleep(0.3)  # the pass under way
            ended_on_its_own = bool(stopper.is_set())

        task = asyncio.create_task(daemon())
        running = kopf_daemons.Daemon(task, logging.getLogger("test"), handler, stopper)
        delays = await kopf_daemons.stop_daemons(
            settings=kopf.OperatorSettings(), daemons={handler.id: running}
        )
        assert delays  # kopf checks again later instead of cancelling now
        await asyncio.wait([task], timeout=2.0)
        return not task.cancelled() and ended_on_its_own

    assert asyncio.run(scenario())


class ShortPass(reconcile.Reconciler):
    """A pass that awaits the API server for a moment (a status write)."""

    plural = NODEDRAINS
    begun = 0

    async def run(self) -> None:
        ShortPass.begun += 1
        await asyncio.sleep(0.02)


def test_a_deleted_objects_loop_lets_kopf_finish_the_deletion_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf's stop on deletion, with the operator's settings, of a loop in a short pass: the
    loop ends within kopf's instant-exit wait, so kopf asks for no later check and removes
    the finalizer now. Without that wait kopf checked again only after the daemon's grace
    (STOP_GRACE_SECONDS): a deleted NodeDrain lingered 5 s (`kubectl proxmigrate plan` left
    its dry-run drain behind that long)."""
    from kopf._core.engines import daemons as kopf_daemons
    from kopf._core.intents.stoppers import DaemonStoppingReason

    from proxmigrate.controllers import drains  # noqa: F401 (registers the daemon)

    monkeypatch.setattr(reconcile, "shared_kube", lambda: None)
    handler = kopf_daemon("node_drain")
    settings = operator_settings()
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "d1"}, "spec": {}})

    async def scenario() -> list[float]:
        stopper: FlagSetter[DaemonStoppingReason] = FlagSetter()
        ShortPass.begun = 0
        task = asyncio.create_task(
            reconcile.reconcile_until_stopped(
                ShortPass,
                body,
                None,  # type: ignore[arg-type]
                Registry(),
                stopper.async_waiter,  # type: ignore[arg-type]
            )
        )
        while ShortPass.begun < 1:
            await asyncio.sleep(0)
        running = kopf_daemons.Daemon(task, logging.getLogger("test"), handler, stopper)
        delays = await kopf_daemons.stop_daemons(settings=settings, daemons={handler.id: running})
        await asyncio.wait([task], timeout=1.0)
        assert task.done() and not task.cancelled()
        return list(delays)

    assert asyncio.run(scenario()) == []


class IdleRuntime:
    """A connected cluster's runtime whose engine loop waits for work."""

    label = "ns/lab"
    heartbeat = float("inf")  # never stalled
    failed_ticks = 0

    def __init__(self) -> None:
        self.closed = False
        self.attempts = SimpleNamespace(running=[])

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


def test_a_deleted_clusters_daemon_ends_on_its_own_and_closes_its_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf's stop of the ProxmoxCluster daemon (its object deleted), with the operator's
    settings, while it sleeps between syncs: it ends within kopf's instant-exit wait and
    closes its runtime. Before, its sleep ignored `stopped` and kopf cancelled it ("Daemon
    'proxmox_cluster' is cancelled" once per deleted cluster)."""
    from kopf._core.engines import daemons as kopf_daemons
    from kopf._core.intents.stoppers import DaemonStoppingReason

    from proxmigrate.controllers import cluster_status, clusters

    runtime = IdleRuntime()

    async def connect(*_: Any) -> tuple[IdleRuntime, object]:
        return runtime, object()

    async def report(*_: Any) -> None:
        pass

    monkeypatch.setattr(clusters, "shared_kube", lambda: None)
    monkeypatch.setattr(clusters, "_connect", connect)
    # the empty spec is refused: Ready False
    monkeypatch.setattr(cluster_status.ClusterStatus, "report", report)
    handler = kopf_daemon("proxmox_cluster")
    settings = operator_settings()
    registry = Registry()

    async def scenario() -> tuple[list[float], bool]:
        stopper: FlagSetter[DaemonStoppingReason] = FlagSetter()
        task = cluster_daemon(kopf.Memo(registry=registry), stopper)
        while ("ns", "lab") not in registry.runtimes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # asleep until the next sync
        running = kopf_daemons.Daemon(task, logging.getLogger("test"), handler, stopper)
        delays = await kopf_daemons.stop_daemons(settings=settings, daemons={handler.id: running})
        await asyncio.wait([task], timeout=1.0)
        return list(delays), task.done() and not task.cancelled()

    assert asyncio.run(scenario()) == ([], True)
    assert runtime.closed and registry.runtimes == {}


class MigratingRuntime(IdleRuntime):
    """A connected cluster's runtime with one running migration, whose cancellation stops
    its PVE task only while the runtime is open (the real one answers "disconnected")."""

    def __init__(self) -> None:
        super().__init__()
        request = SimpleNamespace(name="m1", vmid=100, event_ref={"kind": "VMMigration"})
        self.attempts = SimpleNamespace(running=[SimpleNamespace(request=request, upid="U1")])
        self.stopped_tasks: list[str] = []

    async def cancel(self, request: Any) -> str:
        await asyncio.sleep(0.2)  # PVE's DELETE of the task, then its reads
        if self.closed:
            return "nothing to cancel: disconnected"
        self.stopped_tasks.append(request.name)
        self.attempts.running = []
        return "cancelled; PVE task U1 stopped"


def _delete_cluster(
    monkeypatch: pytest.MonkeyPatch, runtime: IdleRuntime, cancel_after: float | None
) -> tuple[list[float], bool, float, list[tuple[str, str]]]:
    """Run the ProxmoxCluster daemon, delete its object as kopf does (stop_daemons, the
    operator's settings) and, `cancel_after` seconds later, its VMMigration (kopf's delete
    handler): kopf's delays, whether the daemon ended on its own, how long after the stop,
    and the Events posted (kind, reason). The cluster's last status, which has kopf look
    again, is written once the daemon has ended."""
    from kopf._core.engines import daemons as kopf_daemons
    from kopf._core.intents.stoppers import DaemonStoppingReason

    from proxmigrate.controllers import cluster_status, clusters, migrations

    async def connect(*_: Any) -> tuple[IdleRuntime, object]:
        return runtime, object()

    async def report(*_: Any) -> None:
        pass

    posted: list[tuple[str, str]] = []
    farewells: list[bool] = []  # whether the daemon had ended when its last status was written
    daemon: list[asyncio.Task[Any]] = []

    async def say_deleted(*_: Any) -> None:
        farewells.append(daemon[0].done())

    monkeypatch.setattr(cluster_status.ClusterStatus, "say_deleted", say_deleted)
    monkeypatch.setattr(clusters, "shared_kube", lambda: None)
    monkeypatch.setattr(clusters, "_connect", connect)
    monkeypatch.setattr(cluster_status.ClusterStatus, "report", report)
    monkeypatch.setattr(
        clusters.events, "post", lambda _r, kind, why, _m: posted.append((kind, why))
    )
    handler = kopf_daemon("proxmox_cluster")
    settings = operator_settings()
    registry = Registry()
    memo = kopf.Memo(registry=registry)
    migration = kopf.Body(
        {
            "metadata": {"namespace": "ns", "name": "m1"},
            "spec": {"clusterRef": {"name": "lab"}, "vmid": 100, "target": "pve2"},
            "status": {"phase": "Running"},
        }
    )

    async def scenario() -> tuple[list[float], bool, float]:
        stopper: FlagSetter[DaemonStoppingReason] = FlagSetter()
        task = cluster_daemon(memo, stopper)
        daemon.append(task)
        while ("ns", "lab") not in registry.runtimes:
            await asyncio.sleep(0.01)
        running = kopf_daemons.Daemon(task, logging.getLogger("test"), handler, stopper)
        stopped_at = time.monotonic()
        delays = await kopf_daemons.stop_daemons(settings=settings, daemons={handler.id: running})
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)  # its deletion's watch event comes later
            await migrations.cancel_migration(
                body=migration,
                status=migration["status"],
                logger=logging.getLogger("test"),
                memo=memo,
            )
        await asyncio.wait([task], timeout=5.0)
        took = time.monotonic() - stopped_at
        await asyncio.sleep(0.01)
        return list(delays), task.done() and not task.cancelled(), took

    delays, ended, took = asyncio.run(scenario())
    assert runtime.closed and registry.runtimes == {}
    assert farewells == [True]
    return delays, ended, took, posted


def test_a_cluster_deleted_with_its_running_migration_stops_that_task_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kubectl delete -f dir/`: the ProxmoxCluster's deletion is seen first, its running
    VMMigration's 0.3 s later. The runtime stays open until that cancellation stopped the
    PVE task, then closes at once. Before, the daemon closed it at the stop, and the
    cancellation found it disconnected: the task went on."""
    runtime = MigratingRuntime()
    delays, ended, took, posted = _delete_cluster(monkeypatch, runtime, cancel_after=0.3)
    assert runtime.stopped_tasks == ["m1"]
    assert ended and took < 1.0  # not the settle of 2 s after the cancellation
    assert delays  # kopf looks again later rather than cancelling the daemon
    assert posted == []


def test_a_cluster_deleted_alone_leaves_its_running_migration_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its VMMigration is not deleted: the daemon waits the settle for its cancellation,
    then closes and says on the cluster and on the VMMigration that the task goes on."""
    from proxmigrate.controllers import cluster_deletion

    monkeypatch.setattr(cluster_deletion, "CANCELS_SETTLE_SECONDS", 0.3)
    runtime = MigratingRuntime()
    _, ended, took, posted = _delete_cluster(monkeypatch, runtime, cancel_after=None)
    assert ended and 0.3 <= took < 1.0
    assert runtime.stopped_tasks == []
    assert posted == [("Warning", "LeftRunning")] * 2


def test_a_running_migration_deleted_after_its_cluster_closed_says_its_task_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A VMMigration deleted once its ProxmoxCluster's runtime is gone (deleted later than
    the cluster's wait, or before it connected): its task cannot be stopped, and a Warning
    says so. Before, the delete handler returned without a word."""
    from proxmigrate.controllers import migrations

    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        migrations.events, "post", lambda _r, kind, why, text: posted.append((kind, why, text))
    )
    status = {"phase": "Running", "upid": "UPID:pve1:1"}
    body = kopf.Body(
        {
            "metadata": {"namespace": "ns", "name": "m1"},
            "spec": {"clusterRef": {"name": "lab"}, "vmid": 100, "target": "pve2"},
            "status": status,
        }
    )
    asyncio.run(
        migrations.cancel_migration(
            body=body,
            status=body.status,
            logger=logging.getLogger("test"),
            memo=kopf.Memo(registry=Registry()),
        )
    )
    ((kind, reason, text),) = posted
    assert (kind, reason) == ("Warning", "Cancelled")
    assert "PVE task UPID:pve1:1 was not stopped; check VM 100 on its nodes" in text
