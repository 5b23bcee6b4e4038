"""The Argo CD health checks (docs/argocd/argocd-cm-health.yaml) run in Lua 5.1, the language
of Argo CD's gopher-lua, on status documents built by the operator's own status code: terminal
failures read Degraded, work in progress Progressing, done Healthy."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml

from proxmigrate.api.conditions import set_condition
from proxmigrate.api.constants import API_VERSION, GROUP
from proxmigrate.api.enums import DrainPhase, MaintenancePhase, PlacementPolicy
from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.planning import PlacementAction, PlacementDecision
from proxmigrate.runtime.drain_progress import progress_status, waiting_status
from proxmigrate.runtime.placement_sync import SyncOutcome, invalid_status, sync_status
from proxmigrate.status import migration
from proxmigrate.status.drain_entry import DrainEntry
from proxmigrate.status.drain_return import return_status
from proxmigrate.status.maintenance import NodeEntry, Verdict, maintenance_status
from tests.support.controlplane import REPO_ROOT

PATCH = REPO_ROOT / "docs" / "argocd" / "argocd-cm-health.yaml"
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
EPOCH = NOW.timestamp()
KINDS = ("NodeDrain", "VMMigration", "VMPlacement", "ProxmoxCluster", "NodeMaintenance")


@cache
def scripts() -> dict[str, str]:
    data = yaml.safe_load(PATCH.read_text())["data"]
    return {key.rsplit("_", 1)[1]: script for key, script in data.items()}


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON as Argo CD hands it to Lua: objects and arrays as tables, nulls absent."""
    if isinstance(value, Mapping):
        return runtime.table_from(
            {k: to_lua(runtime, v) for k, v in value.items() if v is not None}
        )
    if isinstance(value, Sequence) and not isinstance(value, str):
        return runtime.table_from([to_lua(runtime, v) for v in value if v is not None])
    return value


def health(kind: str, status: Mapping[str, Any] | None, **spec: Any) -> tuple[str, str]:
    """(hs.status, hs.message) of the kind's script on an object with this status."""
    runtime = lupa.LuaRuntime()
    obj = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": "x", "generation": spec.pop("generation", 1)},
        "spec": spec,
        "status": status,
    }
    runtime.globals().obj = to_lua(runtime, obj)
    answer = runtime.execute(scripts()[kind])
    assert answer.status in ("Healthy", "Progressing", "Degraded", "Suspended")
    return str(answer.status), str(answer.message)


def test_one_script_per_kind_under_argo_cds_key() -> None:
    data = yaml.safe_load(PATCH.read_text())["data"]
    assert sorted(data) == sorted(f"resource.customizations.health.{GROUP}_{k}" for k in KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_no_status_yet_is_progressing(kind: str) -> None:
    assert health(kind, None)[0] == "Progressing"
    assert health(kind, {})[0] == "Progressing"


# ----- NodeDrain ------------------------------------------------------------------------------


def entry(vmid: int, phase: str, **extra: Any) -> dict[str, Any]:
    return {"vmid": vmid, "phase": phase, "from": "pve1", "to": "pve2", "memoryBytes": 1, **extra}


def drain_progress(*phases: str) -> dict[str, Any]:
    entries = [entry(100 + i, phase) for i, phase in enumerate(phases)]
    for e in entries:
        if e["phase"] == "Failed":
            e["reason"] = "ssh_dropped: connection reset"
    return progress_status(entries, {"startTime": "2026-01-01T11:59:00Z"}, 1, NOW)


def waiting(phase: DrainPhase, reason: str, message: str, degraded: bool) -> dict[str, Any]:
    return waiting_status({}, phase, reason, message, 1, NOW, degraded=degraded)


@pytest.mark.parametrize(
    ("status", "expected", "in_message"),
    [
        (
            waiting(DrainPhase.PENDING, "WaitingForCluster", "lab not ready", False),
            "Progressing",
            "lab not ready",
        ),
        (waiting(DrainPhase.PLANNING, "Planning", "planning", False), "Progressing", "planning"),
        (drain_progress("Migrating", "Queued", "Migrated"), "Progressing", "1 of 3 VMs migrated"),
        (drain_progress("Migrating", "Failed"), "Progressing", "1 VMs failed"),
        (drain_progress("Migrated", "Migrated", "Skipped"), "Healthy", "2 of 3 VMs migrated"),
        (drain_progress("Migrated", "Failed"), "Degraded", "101: ssh_dropped"),
        (
            waiting(DrainPhase.BLOCKED, "InsufficientCapacity", "64.0 GiB missing", True),
            "Degraded",
            "64.0 GiB missing",
        ),
        (
            {**drain_progress("Migrated", "Queued"), "phase": DrainPhase.CANCELLED.value},
            "Degraded",
            "cancelled",
        ),
    ],
)
def test_drain_phases(status: dict[str, Any], expected: str, in_message: str) -> None:
    state, message = health("NodeDrain", status, nodeName="pve1")
    assert (state, in_message in message) == (expected, True), message


def returning(*phases: str) -> dict[str, Any]:
    """A drain's status after maintenanceDone, its guests' returns in `phases`."""
    entries = [
        DrainEntry.parse({**entry(100 + i, "Migrated", migration="m"), "returnPhase": phase})
        for i, phase in enumerate(phases)
    ]
    status = drain_progress(*["Migrated"] * len(phases))
    return {**status, **return_status(entries, status, 1, NOW)}


@pytest.mark.parametrize(
    ("status", "expected", "in_message"),
    [
        (returning("Returned", "Migrating"), "Progressing", "1 of 2 guests returned home"),
        (returning("Returned", "ReturnSkipped"), "Healthy", "1 of 2 guests returned home"),
        (returning("Returned", "Failed"), "Degraded", "1 returns failed"),
    ],
)
def test_drain_return_phases(status: dict[str, Any], expected: str, in_message: str) -> None:
    state, message = health("NodeDrain", status, nodeName="pve1")
    assert (state, in_message in message) == (expected, True), message


def test_a_dry_run_is_done_when_its_plan_is_written() -> None:
    plan = {"entries": [], "unplaceable": []}
    planning = waiting(DrainPhase.PENDING, "DryRun", "dry run: 3 VMs planned", False)
    assert health("NodeDrain", planning, dryRun=True)[0] == "Progressing"  # no plan yet
    assert health("NodeDrain", {**planning, "plan": plan}, dryRun=True) == (
        "Healthy",
        "dry run: 3 VMs planned",
    )
    would_block = waiting(DrainPhase.BLOCKED, "DryRun", "a real drain would be Blocked", True)
    assert health("NodeDrain", {**would_block, "plan": plan}, dryRun=True)[0] == "Degraded"


def done(kind: str) -> dict[str, Any]:
    """A finished, healthy status of each kind, as the operator writes it (generation 1)."""
    if kind == "NodeDrain":
        return drain_progress("Migrated")
    if kind == "VMMigration":
        running = migration.start_requested({}, "pve1", 1, EPOCH)
        return {
            **migration.merged(running, migration.succeeded(running, EPOCH)),
            "observedGeneration": 1,
        }
    if kind == "VMPlacement":
        return placement(PlacementAction.IN_SYNC)
    if kind == "NodeMaintenance":
        return maintenance(MaintenancePhase.SUCCEEDED)
    return cluster(True, "Connected", "4 nodes")


@pytest.mark.parametrize("kind", KINDS)
def test_a_status_older_than_the_spec_is_progressing(kind: str) -> None:
    assert health(kind, done(kind), generation=1)[0] == "Healthy"
    assert health(kind, done(kind), generation=2) == (
        "Progressing",
        "waiting for the operator to see generation 2",
    )


# ----- VMMigration ----------------------------------------------------------------------------


def test_migration_lifecycle() -> None:
    status: dict[str, Any] = {}

    def step(patch: Mapping[str, Any]) -> tuple[str, str]:
        nonlocal status
        status = migration.merged(status, patch)
        return health("VMMigration", status, vmid=101, target="pve2")

    assert step(migration.queued(status, "pve1", EPOCH, "waiting for a slot"))[0] == "Progressing"
    assert step(migration.start_requested(status, "pve1", 1, EPOCH))[0] == "Progressing"
    assert step(migration.started(status, "UPID:pve1:1", EPOCH))[0] == "Progressing"
    retry = migration.retrying(status, EPOCH, _failure(), EPOCH + 5, 1)
    assert step(retry)[0] == "Progressing"
    assert step(migration.start_requested(status, "pve1", 2, EPOCH))[0] == "Progressing"
    assert step(migration.succeeded(status, EPOCH + 9)) == ("Healthy", "migrated")


def _failure() -> Failure:
    return Failure(Reason.SSH_DROPPED, True, FailurePhase.PHASE2, "Connection reset", False)


def test_migration_failed_and_cancelled_are_degraded() -> None:
    running = migration.start_requested({}, "pve1", 1, EPOCH)
    failed = migration.merged(
        running, migration.failed(running, EPOCH, Reason.VM_LOCKED, "VM is locked (backup)")
    )
    state, message = health("VMMigration", failed)
    assert state == "Degraded" and "VM is locked (backup)" in message
    cancelled = migration.merged(running, migration.cancelled(running, EPOCH, "NodeDrain deleted"))
    assert health("VMMigration", cancelled) == ("Degraded", "cancelled: NodeDrain deleted")


# ----- VMPlacement ----------------------------------------------------------------------------


def decision(action: PlacementAction, current: str, desired: str | None) -> PlacementDecision:
    reason = "node pve3 is cordoned" if action is PlacementAction.BLOCKED else ""
    return PlacementDecision(101, "db", current, desired, action, reason, True, False)


def placement(
    action: PlacementAction,
    policy: PlacementPolicy = PlacementPolicy.ENFORCE,
    outcome: SyncOutcome | None = None,
) -> dict[str, Any]:
    desired = None if action is PlacementAction.BLOCKED else "pve2"
    current = "pve2" if action is PlacementAction.IN_SYNC else "pve1"
    return sync_status(
        [decision(action, current, desired)], policy, outcome or SyncOutcome(), {}, {}, 3600, 1, NOW
    )


@pytest.mark.parametrize(
    ("status", "expected", "in_message"),
    [
        (placement(PlacementAction.IN_SYNC), "Healthy", "desired node"),
        (placement(PlacementAction.MOVE), "Progressing", "moving back: 101: pve1 -> pve2"),
        (placement(PlacementAction.MOVE, PlacementPolicy.REPORT), "Degraded", "policy report"),
        (placement(PlacementAction.BLOCKED), "Degraded", "cordoned"),
        (
            placement(PlacementAction.MOVE, outcome=SyncOutcome(flapped=[101])),
            "Degraded",
            "too often",
        ),
        (
            invalid_status({}, "VMNotFound", "no VM 101 in lab", 1, NOW, degraded=True),
            "Degraded",
            "no VM 101",
        ),
    ],
)
def test_placement_states(status: dict[str, Any], expected: str, in_message: str) -> None:
    state, message = health("VMPlacement", status, vmid=101, node="pve2")
    assert (state, in_message in message) == (expected, True), message


# ----- ProxmoxCluster -------------------------------------------------------------------------


def cluster(ready: bool | None, reason: str, message: str, offline: str = "") -> dict[str, Any]:
    conditions = set_condition(None, "Ready", ready, reason, message, 1, NOW)
    degraded = (True, "NodesOffline", offline) if offline else (False, "AsExpected", "ok")
    conditions = set_condition(conditions, "Degraded", *degraded, 1, NOW)
    return {"conditions": conditions, "observedGeneration": 1}


@pytest.mark.parametrize(
    ("status", "expected", "in_message"),
    [
        (cluster(None, "Connecting", "connecting to pve1:8006"), "Progressing", "connecting"),
        (cluster(True, "Connected", "PVE 9.0.3, 4 nodes"), "Healthy", "4 nodes"),
        (cluster(True, "Connected", "4 nodes", "pve4 offline"), "Healthy", "pve4 offline"),
        (
            cluster(False, "SecretNotFound", "Secret pve-token not found"),
            "Degraded",
            "SecretNotFound: Secret pve-token",
        ),
    ],
)
def test_cluster_states(status: dict[str, Any], expected: str, in_message: str) -> None:
    state, message = health("ProxmoxCluster", status, endpoints=["pve1:8006"])
    assert (state, in_message in message) == (expected, True), message


# ----- NodeMaintenance ------------------------------------------------------------------------


def maintenance(phase: MaintenancePhase, degraded: bool = False) -> dict[str, Any]:
    """A NodeMaintenance's status as the operator writes it (generation 1)."""
    verdict = Verdict(phase, "Reason", f"{phase.value} message", degraded)
    return maintenance_status([NodeEntry("pve1"), NodeEntry("pve2")], verdict, {}, 1, NOW)


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (MaintenancePhase.PENDING, "Progressing"),
        (MaintenancePhase.RUNNING, "Progressing"),
        (MaintenancePhase.PAUSED, "Suspended"),
        (MaintenancePhase.SUCCEEDED, "Healthy"),
        (MaintenancePhase.FAILED, "Degraded"),
        (MaintenancePhase.BLOCKED, "Degraded"),
    ],
)
def test_maintenance_phases(phase: MaintenancePhase, expected: str) -> None:
    state, message = health("NodeMaintenance", maintenance(phase))
    assert (state, message) == (expected, f"{phase.value} message")


def test_a_maintenance_dry_run_is_done_when_its_plan_is_written() -> None:
    pending = maintenance(MaintenancePhase.PENDING)
    assert health("NodeMaintenance", pending, dryRun=True)[0] == "Progressing"
    planned = {**maintenance(MaintenancePhase.PENDING), "plan": {"steps": []}}
    assert health("NodeMaintenance", planned, dryRun=True)[0] == "Healthy"
    blocked = {**maintenance(MaintenancePhase.PENDING, degraded=True), "plan": {"steps": []}}
    assert health("NodeMaintenance", blocked, dryRun=True)[0] == "Degraded"
