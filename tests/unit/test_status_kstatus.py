"""Status as GitOps tools read it: kstatus (Flux's `wait`) sees a finished or failed object as
such, every status observes its generation, and a failure's condition reason names its cause."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from proxmigrate.api.enums import DrainPhase
from proxmigrate.failures import Reason
from proxmigrate.runtime import drain_progress as progress
from proxmigrate.runtime.attempt import MigrationRequest
from proxmigrate.status.drain import DRY_RUN, waiting_status
from tests.unit.test_runtime_cluster import FIRST_LOOK, FakePve, runtime, settle

NOW = datetime.datetime(2027, 1, 15, 8, 0, tzinfo=datetime.UTC)


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus' verdict on a custom resource (sigs.k8s.io/cli-utils pkg/kstatus/status:
    checkGenericProperties, then checkReadyCondition, else Current)."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"]["generation"]:
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    if "Ready" in conditions:
        return "Current" if conditions["Ready"] == "True" else "InProgress"
    return "Current"


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_vmmigration_observes_its_generation_and_fails_visibly_with_its_cause() -> None:
    async def scenario() -> None:
        pve = FakePve()
        clock = [1000.0]
        rt, kube = runtime(pve, clock)
        request = MigrationRequest("ns", "move", "uid", 100, "pve2", generation=3)
        await rt.accept(request, {})
        await settle(rt)
        queued = {"metadata": {"generation": 3}, "status": kube.patches[0]}
        assert kstatus(queued) == "InProgress"
        pve.finish(
            pve.task_rows[0]["upid"],
            "migration aborted",
            ["can't migrate VM which uses local devices: hostpci0"],
        )
        clock[0] += FIRST_LOOK  # its log is read once the transfer may have begun
        await settle(rt)
        final = kube.patches[-1]
        assert final["phase"] == "Failed"
        written = [p for p in kube.patches if "conditions" in p]
        assert written and all(p["observedGeneration"] == 3 for p in written)
        ready = condition(final, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "LocalResources")
        assert final["reason"] == "local_resources"  # the same cause, as status.reason
        assert kstatus({"metadata": {"generation": 3}, "status": final}) == "Failed"

    asyncio.run(scenario())


def test_condition_reasons_are_the_failure_reasons_in_camel_case() -> None:
    assert Reason.SSH_DROPPED.condition_reason == "SshDropped"
    assert Reason.VM_NOT_FOUND.condition_reason == "VmNotFound"


def entry(vmid: int, phase: str) -> dict[str, Any]:
    return {"vmid": vmid, "from": "pve1", "to": "pve2", "phase": phase, "memoryBytes": 1}


@pytest.mark.parametrize(
    ("phases", "verdict"),
    [
        (["Migrated", "Migrating"], "InProgress"),
        (["Migrated", "Skipped"], "Current"),
        (["Migrated", "Failed"], "Failed"),
    ],
)
def test_a_drain_reads_in_progress_until_it_ends_and_failed_when_it_failed(
    phases: list[str], verdict: str
) -> None:
    entries = [entry(100 + i, phase) for i, phase in enumerate(phases)]
    status = progress.progress_status(entries, {}, 2, NOW)
    assert kstatus({"metadata": {"generation": 2}, "status": status}) == verdict


@pytest.mark.parametrize(
    ("phase", "reason", "degraded", "verdict"),
    [
        (DrainPhase.PENDING, "ClusterNotReady", False, "InProgress"),  # works on it
        (DrainPhase.BLOCKED, "InsufficientCapacity", True, "Failed"),  # needs someone to act
        (DrainPhase.PENDING, DRY_RUN, False, "Current"),  # its plan is written: done
        (DrainPhase.BLOCKED, DRY_RUN, True, "Failed"),  # a real drain would be Blocked
    ],
)
def test_a_waiting_drain_reads_as_what_it_waits_for(
    phase: DrainPhase, reason: str, degraded: bool, verdict: str
) -> None:
    status = waiting_status({}, phase, reason, "why", 2, NOW, degraded=degraded)
    assert kstatus({"metadata": {"generation": 2}, "status": status}) == verdict
