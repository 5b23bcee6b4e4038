"""The ProxmoxCluster daemon: a new runtime adopts unfinished VMMigrations; a stalled or
failing engine shows in Ready and in /healthz; kopf's settings bound every API call."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest

from proxmigrate.controllers import clusters, engine_health, events
from proxmigrate.controllers.connection import Connection
from proxmigrate.controllers.migrations import adopt_migrations
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.controllers.registry import Registry
from proxmigrate.controllers.settings import configure
from proxmigrate.pve.transport import TokenAuth
from proxmigrate.runtime.cluster import MigrationRequest
from tests.unit.test_runtime_cluster import FakePve, runtime


def _migration(name: str, phase: str | None, cluster: str = "lab", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": name, **meta},
        "spec": {"clusterRef": {"name": cluster}, "vmid": 100, "target": "pve2"},
        "status": {"phase": phase} if phase else {},
    }


class ListingKube:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list(self, plural: str, namespace: str, label_selector: str | None = None) -> Any:
        return self.items


def test_a_rebuilt_runtime_adopts_every_unfinished_migration_of_its_cluster() -> None:
    rt, _ = runtime(FakePve(), [1000.0])
    accepted: list[tuple[str, str | None]] = []

    async def accept(request: MigrationRequest, current: dict[str, Any]) -> bool:
        accepted.append((request.name, current.get("phase")))
        return request.name != "queued"  # known already: not counted

    rt.accept = accept  # type: ignore[method-assign]
    kube = ListingKube(
        [
            _migration("queued", "Queued"),
            _migration("running", "Running"),
            _migration("pending", "Pending"),
            _migration("new", None),
            _migration("done", "Succeeded"),
            _migration("failed", "Failed"),
            _migration("other", "Running", cluster="elsewhere"),
            _migration("going", "Running", deletionTimestamp="2026-01-01T00:00:00Z"),
        ]
    )
    count = asyncio.run(adopt_migrations(kube, rt))  # type: ignore[arg-type]
    assert accepted == [("queued", "Queued"), ("running", "Running"), ("pending", "Pending"),
                        ("new", None)]  # fmt: skip
    assert count == 3


def test_a_stalled_engine_fails_healthz_and_a_failing_one_is_not_ready() -> None:
    rt, _ = runtime(FakePve(), [1000.0])
    memo = kopf.Memo(registry=Registry())
    memo.registry.runtimes[("ns", "lab")] = rt
    assert engine_health.engines_alive(memo) == {"ns/lab": pytest.approx(0.0, abs=1.0)}
    rt.heartbeat -= engine_health.ENGINE_STALL_SECONDS + 1
    with pytest.raises(kopf.PermanentError, match="ns/lab"):
        engine_health.engines_alive(memo)

    async def check() -> None:
        loop = asyncio.create_task(asyncio.sleep(10))
        try:
            trouble = engine_health.engine_trouble(rt, loop)
            assert trouble is not None and trouble[0] == "EngineStalled"
            rt.heartbeat += engine_health.ENGINE_STALL_SECONDS + 1
            rt.failed_ticks, rt.loop_error = 3, "ApiException: (500)"
            assert engine_health.engine_trouble(rt, loop) == (
                "EngineFailing",
                "3 ticks failed: ApiException: (500)",
            )
            rt.failed_ticks = 0
            assert engine_health.engine_trouble(rt, loop) is None
        finally:
            loop.cancel()
        stopped = asyncio.create_task(asyncio.sleep(0))
        await stopped
        trouble = engine_health.engine_trouble(rt, stopped)
        assert trouble is not None and trouble[0] == "EngineStopped"

    asyncio.run(check())


def test_every_watch_and_request_has_a_timeout_and_peering_is_mandatory_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(OPTIONS, "peering_mandatory", True)
    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.peering.mandatory
    assert settings.watching.server_timeout is not None and settings.watching.server_timeout < 60
    assert settings.watching.client_timeout is not None and settings.watching.client_timeout <= 60
    assert settings.watching.connect_timeout is not None
    assert settings.networking.request_timeout is not None
    assert settings.networking.request_timeout <= 30
    monkeypatch.setattr(OPTIONS, "peering_mandatory", False)
    configure(settings)
    assert not settings.peering.mandatory


def test_a_connection_without_tls_verification_is_said_out_loud(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        events, "post", lambda ref, kind, reason, message: posted.append((kind, reason))
    )
    rt, _ = runtime(FakePve(), [1000.0])
    unverified = Connection(("pve:8006",), TokenAuth("a@pve!t", "s"), False, None)
    clusters._warn_if_unverified(unverified, rt)
    assert posted == [("Warning", "TLSVerificationOff")]
    assert "TLS verification is off" in caplog.text
    clusters._warn_if_unverified(dataclasses.replace(unverified, verify_tls=True), rt)
    assert len(posted) == 1
