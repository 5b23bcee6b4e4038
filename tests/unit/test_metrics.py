"""The exported series say what is true now: idle targets read 0, a cancelled migration is
not a failure, and what a deleted object or a paused replica no longer manages is gone."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kopf
import pytest
from prometheus_client import generate_latest

from proxmigrate import metrics
from proxmigrate.api.enums import DrainPhase
from proxmigrate.controllers import (
    cluster_status,
    clusters,
    drain_series,
    drains,
    events,
    placements,
)
from proxmigrate.controllers.registry import Registry, Waker
from proxmigrate.inventory import Inventory, NodeInfo
from proxmigrate.metrics import REGISTRY
from proxmigrate.runtime import drain_progress as progress
from proxmigrate.runtime.cluster import MigrationRequest
from tests.unit.test_runtime_cluster import FIRST_LOOK, GIB, FakePve, runtime, settle

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def series(name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    ]


class StoppablePve(FakePve):
    async def stop_task(self, node: str, upid: str) -> None:
        self.finish(upid, "interrupted by signal")

    async def unlock_vm(self, node: str, vmid: int) -> None:
        pass


def test_in_flight_drops_to_zero_when_the_target_goes_idle() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, _ = runtime(pve, clock)
        rt.name = "idle"
        labels = {"proxmox_cluster": "ns/idle", "target": "pve2"}
        await rt.accept(MigrationRequest("ns", "m", "u", 100, "pve2"), {})
        await settle(rt)
        assert value("proxmigrate_migrations_in_flight", **labels) == 1
        pve.finish(pve.task_rows[0]["upid"], "OK")
        clock[0] += FIRST_LOOK  # its log is read once the transfer may have begun
        await settle(rt)
        assert value("proxmigrate_migrations_in_flight", **labels) == 0
        assert value("proxmigrate_migrations_queued", proxmox_cluster="ns/idle") == 0

    asyncio.run(scenario())


def test_counters_and_histograms_start_at_zero_before_their_first_event() -> None:
    """Prometheus' increase() cannot see the first increment of a series that starts at 1."""

    async def scenario() -> None:
        rt, _ = runtime(FakePve(), [1000.0])
        rt.name = "zero"
        await rt.refresh_inventory()  # the ProxmoxCluster's sync: nodes pve1 and pve2
        await settle(rt)  # nothing to migrate yet
        for node in ("pve1", "pve2"):
            by = {"proxmox_cluster": "ns/zero", "target": node}
            assert value("proxmigrate_ssh_drops_total", **by) == 0
            assert value("proxmigrate_migrations_in_flight", **by) == 0
            for result in ("succeeded", "failed", "cancelled"):
                assert value("proxmigrate_migrations_total", **by, result=result) == 0
        cluster = {"proxmox_cluster": "ns/zero"}
        for reason in ("ssh_dropped", "port_unavailable", "vm_locked", "timeout"):
            assert value("proxmigrate_migration_retries_total", **cluster, reason=reason) == 0
        for result in ("succeeded", "failed"):
            duration = "proxmigrate_migration_duration_seconds_count"
            assert value(duration, **cluster, result=result) == 0
        assert value("proxmigrate_migration_queue_wait_seconds_count", **cluster) == 0
        for method in ("GET", "POST", "PUT", "DELETE"):  # the auth alert's increase()
            for code in ("401", "403"):
                requests = "proxmigrate_pve_api_requests_total"
                assert value(requests, **cluster, method=method, code=code) == 0

    asyncio.run(scenario())


class JoiningPve(FakePve):
    """A cluster a node joins after the first inventory read."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes = ["pve1", "pve2"]

    async def inventory(self) -> Inventory:
        first = await super().inventory()
        nodes = tuple(NodeInfo(n, True, 64 * GIB, 8 * GIB, 16) for n in self.nodes)
        return Inventory(nodes, first.vms, taken_at=first.taken_at)


def test_a_node_that_joins_later_has_its_counters_at_zero_from_the_next_tick() -> None:
    async def scenario() -> None:
        pve = JoiningPve()
        rt, _ = runtime(pve, [1000.0])
        rt.name = "joins"
        await rt.refresh_inventory()
        await settle(rt)
        by = {"proxmox_cluster": "ns/joins", "target": "pve3"}
        assert value("proxmigrate_ssh_drops_total", **by) is None
        pve.nodes.append("pve3")
        await rt.refresh_inventory()
        await settle(rt)
        assert value("proxmigrate_ssh_drops_total", **by) == 0
        assert value("proxmigrate_migrations_in_flight", **by) == 0
        for result in ("succeeded", "failed", "cancelled"):
            assert value("proxmigrate_migrations_total", **by, result=result) == 0

    asyncio.run(scenario())


def test_a_cancelled_migration_counts_as_cancelled_not_failed() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = StoppablePve()
        rt, kube = runtime(pve, clock)
        rt.name = "cancel"
        request = MigrationRequest("ns", "m", "u", 100, "pve2")
        await rt.accept(request, {})
        await settle(rt)
        assert len(pve.posts) == 1
        await rt.cancel(request)
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Cancelled"
        by = {"proxmox_cluster": "ns/cancel", "target": "pve2"}
        assert value("proxmigrate_migrations_total", **by, result="cancelled") == 1
        assert value("proxmigrate_migrations_total", **by, result="failed") == 0

    asyncio.run(scenario())


def test_closing_a_runtime_removes_every_series_of_its_cluster() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, _ = runtime(pve, clock)
        rt.name = "gone"
        await rt.accept(MigrationRequest("ns", "m", "u", 100, "pve2"), {})
        await settle(rt)
        metrics.PVE_API_REQUESTS.labels("ns/gone", "GET", "200").inc()
        assert value("proxmigrate_migrations_in_flight", proxmox_cluster="ns/gone", target="pve2")
        await rt.close()
        left = [
            sample
            for family in REGISTRY.collect()
            for sample in family.samples
            if sample.labels.get("proxmox_cluster") == "ns/gone"
        ]
        assert left == []

    asyncio.run(scenario())


def test_process_and_python_collectors_are_on_the_operator_registry() -> None:
    text = generate_latest(REGISTRY).decode()
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text
    assert "python_gc_objects_collected_total" in text


def test_no_label_collides_with_the_labels_prometheus_setups_attach() -> None:
    for metric in metrics.LABELLED:
        assert not {"cluster", "node", "instance", "job"} & set(metric._labelnames), metric


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        self.patches.append(status)


def test_cluster_readiness_has_one_series_with_the_current_reason() -> None:
    async def scenario() -> None:
        writer = cluster_status.ClusterStatus(FakeKube(), "ns", "ready", {})  # type: ignore[arg-type]
        await writer.write(1, False, "Unreachable", "connection refused")
        assert series("proxmigrate_cluster_ready") == [
            {"proxmox_cluster": "ns/ready", "reason": "Unreachable"}
        ]
        assert (
            value("proxmigrate_cluster_ready", proxmox_cluster="ns/ready", reason="Unreachable")
            == 0
        )
        await writer.write(1, True, "Connected", "connected")
        assert series("proxmigrate_cluster_ready") == [
            {"proxmox_cluster": "ns/ready", "reason": "Connected"}
        ]
        assert (
            value("proxmigrate_cluster_ready", proxmox_cluster="ns/ready", reason="Connected") == 1
        )
        metrics.forget(proxmox_cluster="ns/ready")

    asyncio.run(scenario())


def test_the_cluster_daemon_removes_its_series_when_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf stops the daemon when the object is deleted or peering pauses the replica."""

    async def manage(name: str, namespace: str, *_: Any) -> None:
        metrics.CLUSTER_READY.labels(f"{namespace}/{name}", "Connected").set(1)
        raise asyncio.CancelledError

    monkeypatch.setattr(clusters, "_manage", manage)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(
            clusters.proxmox_cluster(
                name="paused",
                namespace="ns",
                spec={},
                meta={},
                status={},
                memo=memo(),
                stopped=None,  # unused: `_manage` is replaced
            )
        )
    assert series("proxmigrate_cluster_ready") == []


def drain_body(dry_run: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "d1", "generation": 1},
        "spec": {"clusterRef": {"name": "lab"}, "nodeName": "pve1", "dryRun": dry_run},
        "status": {},
    }


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside kopf there is nobody to post Events."""
    monkeypatch.setattr(events, "post", lambda *_: None)


def memo() -> kopf.Memo:
    return kopf.Memo(registry=Registry())


def drain_reconciler(body: dict[str, Any]) -> drains.DrainReconciler:
    return drains.DrainReconciler(FakeKube(), body, None, Registry(), Waker())  # type: ignore[arg-type]


def blocked(reason: str, dry_run: bool = False) -> list[dict[str, str]]:
    async def scenario() -> None:
        reconciler = drain_reconciler(drain_body(dry_run))
        await reconciler._wait(DrainPhase.BLOCKED, reason, "no room", NOW, degraded=True)

    asyncio.run(scenario())
    return series("proxmigrate_drain_blocked")


def test_a_blocked_drain_exports_its_reason_until_it_moves_on() -> None:
    assert blocked("InvalidNode") == [
        {
            "proxmox_cluster": "ns/lab",
            "pve_node": "pve1",
            "nodedrain": "ns/d1",
            "reason": "InvalidNode",
        }
    ]
    assert [s["reason"] for s in blocked("InsufficientCapacity")] == ["InsufficientCapacity"]

    async def moving() -> None:
        reconciler = drain_reconciler(drain_body())
        await reconciler.write(progress.progress_status([], {}, 1, NOW))

    asyncio.run(moving())
    assert series("proxmigrate_drain_blocked") == []


def test_a_dry_run_that_would_block_exports_nothing() -> None:
    assert blocked("DryRun", dry_run=True) == []


def test_the_drain_daemon_removes_its_blocked_series_when_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reconcile(*_: Any) -> None:
        metrics.DRAIN_BLOCKED.labels("ns/lab", "pve1", "ns/d2", "InvalidNode").set(1)
        raise asyncio.CancelledError

    monkeypatch.setattr(drains, "reconcile_until_stopped", reconcile)
    monkeypatch.setattr(drains.Caches, "of", lambda kwargs: None)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "d2"}})
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(drains.node_drain(body=body, memo=memo(), stopped=None))
    assert series("proxmigrate_drain_blocked") == []


def drain_gauges(drain: str = "ns/d1") -> tuple[float | None, float | None]:
    labels = {"proxmox_cluster": "ns/lab", "pve_node": "pve1", "nodedrain": drain}
    return (
        value("proxmigrate_drain_progress_ratio", **labels),
        value("proxmigrate_drain_remaining_vms", **labels),
    )


def drained_status(**overrides: Any) -> dict[str, Any]:
    vms = [{"vmid": 100, "from": "pve1", "to": "pve2", "phase": "Migrated", **overrides}]
    return {"phase": "Drained", "vms": vms, "startTime": "2026-01-01T00:00:00Z", "progress": 1.0}


def test_a_drain_series_come_back_from_its_status_on_the_first_pass_after_a_restart() -> None:
    """After a restart the cluster may not be reachable yet: the drain waits (Pending) but
    its stored status still says what the gauges said before (the old code exported
    nothing until a pass could read the cluster)."""

    async def first_pass() -> None:
        reconciler = drain_reconciler({**drain_body(), "status": drained_status()})
        await reconciler._wait(DrainPhase.PENDING, "Unreachable", "no answer", NOW, degraded=False)

    asyncio.run(first_pass())
    assert drain_gauges() == (1.0, 0)
    drain_series.forget("ns", "d1")


def test_the_drain_daemon_removes_its_series_after_its_last_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf lets a pass finish after the delete handler ran: what it writes must go too."""
    during: list[tuple[float | None, float | None]] = []

    async def reconcile(*_: Any) -> None:
        await drain_reconciler(drain_body()).write(drained_status())
        during.append(drain_gauges())

    monkeypatch.setattr(drains, "reconcile_until_stopped", reconcile)
    monkeypatch.setattr(drains.Caches, "of", lambda kwargs: None)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "d1"}})
    asyncio.run(drains.node_drain(body=body, memo=memo(), stopped=None))
    assert during == [(1.0, 0)]
    assert series("proxmigrate_drain_progress_ratio") == []
    assert series("proxmigrate_drain_remaining_vms") == []


def test_two_drains_of_one_node_have_their_own_series() -> None:
    """A Returned drain and the next drain of its node: each shows its own figures, and the
    old one's deletion leaves the new one's series (the old code shared one series, which
    both wrote, and deleting either removed it)."""
    returned = {**drained_status(returnPhase="Returned"), "phase": "Returned"}
    drain_series.export("ns", "old", drain_body()["spec"], returned)
    draining = {**drained_status(phase="Migrating"), "phase": "Draining", "remaining": 1}
    drain_series.export("ns", "new", drain_body()["spec"], {**draining, "progress": 0.0})
    assert drain_gauges("ns/old") == (1.0, 0) and drain_gauges("ns/new") == (0.0, 1)
    drain_series.forget("ns", "old")
    assert drain_gauges("ns/old") == (None, None) and drain_gauges("ns/new") == (0.0, 1)
    drain_series.forget("ns", "new")


def test_a_dry_run_or_a_drain_not_started_has_no_progress_series() -> None:
    planned = {"phase": "Pending", "plan": {"moves": []}}
    drain_series.export("ns", "d1", drain_body(dry_run=True)["spec"], planned)
    assert drain_gauges() == (None, None)


def test_the_placement_daemon_leaves_the_out_of_sync_count_after_its_last_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reconcile(*_: Any) -> None:
        placements._export_out_of_sync("ns/lab", "ns/p1", True)  # a drifted last pass
        placements._export_out_of_sync("ns/lab", "ns/p2", True)  # another placement

    monkeypatch.setattr(placements, "reconcile_until_stopped", reconcile)
    monkeypatch.setattr(placements.Caches, "of", lambda kwargs: None)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "p1"}})
    asyncio.run(placements.vm_placement(body=body, memo=memo(), stopped=None))
    assert value("proxmigrate_placements_out_of_sync", proxmox_cluster="ns/lab") == 1
    placements._export_out_of_sync("ns/lab", "ns/p2", None)
    metrics.forget(proxmox_cluster="ns/lab")
