"""Lifecycle Events of drains, placements and clusters: one per transition, none per pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxmigrate import metrics
from proxmigrate.controllers import cluster_status, events


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        events, "post", lambda ref, kind, reason, message: sent.append((kind, reason))
    )
    return sent


def drain(dry_run: bool = False) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "d"}, "spec": {"dryRun": dry_run}}


def test_a_drain_tells_when_it_starts_blocks_and_finishes(posted: list[tuple[str, str]]) -> None:
    ready = {"conditions": [{"type": "Ready", "message": "3 of 3 VMs migrated"}]}
    events.drain_transition(drain(), {}, {"phase": "Pending"})
    events.drain_transition(drain(), {"phase": "Pending"}, {"phase": "Draining"})
    events.drain_transition(drain(), {"phase": "Draining"}, {"phase": "Draining"})  # a pass
    events.drain_transition(drain(), {"phase": "Draining"}, {"phase": "Drained", **ready})
    events.drain_transition(drain(), {}, {"phase": "Blocked"})
    events.drain_transition(drain(dry_run=True), {}, {"phase": "Blocked"})
    assert posted == [
        ("Normal", "DrainStarted"),
        ("Normal", "DrainFinished"),
        ("Warning", "DrainBlocked"),
    ]


def test_a_placement_tells_when_it_corrects_drift(posted: list[tuple[str, str]]) -> None:
    body = {"metadata": {"namespace": "ns", "name": "p"}}
    events.placement_transition(body, {"inSync": True}, {"inSync": False}, created=1)
    events.placement_transition(body, {"inSync": False}, {"inSync": False}, created=0)
    events.placement_transition(body, {"inSync": False}, {"inSync": True}, created=0)
    events.placement_transition(body, {"inSync": True}, {"inSync": True}, created=0)
    assert posted == [("Normal", "DriftDetected"), ("Normal", "DriftCorrected")]


class FakeKube:
    async def patch_status(self, *_: Any) -> None:
        return None


def test_a_cluster_tells_when_it_becomes_ready_or_not_and_why(
    posted: list[tuple[str, str]],
) -> None:
    async def scenario() -> None:
        writer = cluster_status.ClusterStatus(FakeKube(), "ns", "lab", {})  # type: ignore[arg-type]
        await writer.write(1, False, "Unreachable", "connection refused")
        await writer.write(1, False, "Unreachable", "connection refused")  # every sync
        await writer.write(1, False, "AuthenticationFailed", "401")  # another reason
        await writer.write(1, True, "Connected", "connected")
        await writer.write(1, True, "Connected", "connected")

    asyncio.run(scenario())
    metrics.forget(proxmox_cluster="ns/lab")  # the readiness series, global to the process
    assert posted == [
        ("Warning", "ClusterNotReady"),
        ("Warning", "ClusterNotReady"),
        ("Normal", "ClusterReady"),
    ]
