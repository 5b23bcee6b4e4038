"""Return home of a NodeDrain (returnGuests + maintenanceDone): the entries' bookkeeping
and status (status/drain_return.py), then the controller's decisions on one pass
(controllers/drain_returns.py) against fakes of the API server and the cluster runtime."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import DrainReturnPhase, DrainVMPhase
from proxmigrate.api.fields import SpecError
from proxmigrate.controllers import drain_returns, drain_series
from proxmigrate.controllers.context import ClusterContext, cordoned_nodes
from proxmigrate.controllers.drain_requests import (
    moves_elsewhere,
    owning_drain,
    rival_owner,
)
from proxmigrate.engine import EnginePolicy, MigrationEngine
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import DrainRequest, PlannedMove, SkippedVM
from proxmigrate.planning.returns import ReturnPlan
from proxmigrate.status import drain_return as returns
from proxmigrate.status.drain_entry import DrainEntry, parse_entries

GIB = 1024**3
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MIGRATED, PENDING = DrainVMPhase.MIGRATED, DrainVMPhase.PENDING


def entry(vmid: int, phase: DrainVMPhase, to: str = "pve2", **extra: Any) -> DrainEntry:
    migration = f"d-{vmid}" if phase is not PENDING else None
    return DrainEntry(vmid, phase, "pve1", f"vm{vmid}", GIB, to, vmid - 99, migration, **extra)


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def child(name: str, vmid: int, target: str, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"vmid": vmid, "target": target},
        "status": {"phase": phase} if phase else {},
    }


# --- the entries ----------------------------------------------------------------------------


def test_stopping_a_drain_skips_what_did_not_leave_and_keeps_running_moves() -> None:
    entries = [
        entry(100, MIGRATED),
        entry(101, DrainVMPhase.MIGRATING),
        entry(102, DrainVMPhase.QUEUED),  # its VMMigration was withdrawn
        entry(103, PENDING),
    ]
    stopped = {e.vmid: e for e in returns.stop_draining(entries, withdrawn={102})}
    assert stopped[100].phase is MIGRATED and stopped[101].phase is DrainVMPhase.MIGRATING
    for vmid in (102, 103):
        assert (stopped[vmid].phase, stopped[vmid].reason) == (
            DrainVMPhase.SKIPPED,
            returns.NOT_MOVED,
        )


def test_only_guests_the_drain_moved_depart_and_the_others_are_skipped_with_why() -> None:
    outside = entry(102, MIGRATED, reason="left the node outside this drain (now on pve3)")
    entries = [
        entry(101, MIGRATED, to="pve3"),
        entry(100, MIGRATED),
        entry(103, DrainVMPhase.FAILED),
    ]
    entries.append(outside.but(migration=None))
    departures = returns.departures(entries)
    assert [(d.vmid, d.home, d.parked) for d in departures] == [
        (100, "pve1", "pve2"),
        (101, "pve1", "pve3"),
    ]
    plan = ReturnPlan(
        moves=(PlannedMove(100, "vm100", GIB, GIB, "pve2", "pve1", 0, True, False),),
        skipped=(SkippedVM(101, "vm101", "a VMPlacement pins it to pve3, not pve1"),),
    )
    planned = {e.vmid: e for e in returns.with_return_plan(entries, plan)}
    assert planned[100].return_phase is DrainReturnPhase.PENDING
    assert (planned[101].return_phase, planned[101].return_reason) == (
        DrainReturnPhase.SKIPPED,
        "a VMPlacement pins it to pve3, not pve1",
    )
    assert planned[102].return_phase is DrainReturnPhase.SKIPPED
    assert "outside this drain" in (planned[102].return_reason or "")
    assert planned[103].return_phase is None  # it never left
    assert returns.unplanned(list(planned.values())) == []


def test_returns_advance_from_their_migrations_and_skip_guests_moved_meanwhile() -> None:
    pending = DrainReturnPhase.PENDING
    entries = [
        entry(100, MIGRATED, return_phase=pending),
        entry(101, MIGRATED, return_phase=pending),
        entry(102, MIGRATED, return_phase=pending),
        entry(103, MIGRATED, return_phase=DrainReturnPhase.QUEUED, return_migration="d-ret-103"),
        entry(104, MIGRATED, return_phase=pending),
        entry(105, MIGRATED, return_phase=pending),
    ]
    children = {
        100: child("d-ret-100", 100, "pve1", "Succeeded"),
        101: child("d-ret-101", 101, "pve1", "Failed"),
        105: child("d-ret-105", 105, "pve1", "Running"),
    }
    location = {100: "pve1", 101: "pve2", 102: "pve4", 103: "pve2", 105: "pve2"}
    advanced = {e.vmid: e for e in returns.advance_returns(entries, children, location)}
    assert advanced[100].return_phase is DrainReturnPhase.RETURNED
    assert advanced[101].return_phase is DrainReturnPhase.FAILED
    assert (
        advanced[102].return_reason == "moved again meanwhile: on pve4, the drain parked it on pve2"
    )
    assert advanced[103].return_phase is DrainReturnPhase.FAILED  # its VMMigration vanished
    assert advanced[104].return_reason == "no longer in the cluster"
    assert advanced[105].return_phase is DrainReturnPhase.MIGRATING


def test_due_returns_keep_the_window_and_the_order_the_guests_left() -> None:
    entries = [
        entry(vmid, MIGRATED, return_phase=DrainReturnPhase.PENDING) for vmid in (103, 100, 102)
    ]
    entries.append(entry(101, MIGRATED, return_phase=DrainReturnPhase.MIGRATING))
    assert [e.vmid for e in returns.due_returns(entries, window=3)] == [100, 102]
    assert [e.vmid for e in returns.due_returns(entries, window=None)] == [100, 102, 103]


def test_status_is_returning_until_every_return_ended_then_ready() -> None:
    under_way = [
        entry(100, MIGRATED, return_phase=DrainReturnPhase.RETURNED),
        entry(101, MIGRATED, return_phase=DrainReturnPhase.MIGRATING),
    ]
    status = returns.return_status(under_way, {}, 3, NOW)
    assert status["phase"] == "Returning"
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "True"
    done = [
        under_way[0],
        entry(
            101, MIGRATED, return_phase=DrainReturnPhase.SKIPPED, return_reason="already on pve1"
        ),
    ]
    status = returns.return_status(done, status, 3, NOW)
    assert (status["phase"], status["returned"], status["returnSkipped"]) == ("Returned", 1, 1)
    assert condition(status, "Ready")["status"] == "True"
    assert "101: already on pve1" in condition(status, "Ready")["message"]
    assert condition(status, "Degraded")["status"] == "False"
    assert condition(status, "Stalled")["status"] == "False"


def test_failed_returns_end_returned_and_degraded() -> None:
    failed = [entry(100, MIGRATED, return_phase=DrainReturnPhase.FAILED, return_reason="boom")]
    status = returns.return_status(failed, {}, 1, NOW)
    assert (status["phase"], status["returnFailed"]) == ("Returned", 1)
    assert condition(status, "Ready")["status"] == "True"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReturnsFailed")
    assert "100: boom" in degraded["message"]


def test_waiting_keeps_the_drain_returning_with_the_reason() -> None:
    status = returns.return_status([], {}, 1, NOW, ("WaitingForNode", "waiting for pve1"))
    assert status["phase"] == "Returning"
    assert condition(status, "Ready")["reason"] == "WaitingForNode"


def test_returning_counts_what_is_still_to_come_home() -> None:
    entries = [
        entry(100, MIGRATED, return_phase=DrainReturnPhase.RETURNED),
        entry(101, MIGRATED, return_phase=DrainReturnPhase.MIGRATING),
        entry(102, MIGRATED),  # its return not planned yet
        entry(103, DrainVMPhase.MIGRATING),  # its drain move still runs
        entry(104, MIGRATED, return_phase=DrainReturnPhase.SKIPPED),
    ]
    counts = returns.return_counts(entries)
    assert (counts.remaining, counts.progress) == (3, 0.4)
    assert returns.return_counts([]).progress == 1.0


def test_returning_has_an_eta_from_the_returns_throughput() -> None:
    start = {"returnStartTime": "2026-01-01T00:00:00Z"}
    later = NOW + datetime.timedelta(seconds=100)
    first = [
        entry(100, MIGRATED, return_phase=DrainReturnPhase.MIGRATING),
        entry(101, MIGRATED, return_phase=DrainReturnPhase.QUEUED),
    ]
    status = returns.return_status(first, {}, 1, NOW)
    # started now, nothing home yet: no rate, no ETA
    assert status["returnStartTime"] == "2026-01-01T00:00:00Z"
    assert (status["estimatedSecondsRemaining"], status["eta"]) == (None, None)
    # 1 GiB home in 100 s, one running: 2 GiB left on pve2's link take 200 s
    home = [
        entry(100, MIGRATED, return_phase=DrainReturnPhase.RETURNED),
        entry(102, MIGRATED, return_phase=DrainReturnPhase.MIGRATING),
        entry(103, MIGRATED, return_phase=DrainReturnPhase.QUEUED),
    ]
    status = returns.return_status(home, start, 1, later)
    assert status["returnStartTime"] == start["returnStartTime"]
    assert (status["estimatedSecondsRemaining"], status["eta"]) == (200, "3m20s")
    done = [entry(100, MIGRATED, return_phase=DrainReturnPhase.RETURNED)]
    status = returns.return_status(done, start, 1, later)
    assert (status["phase"], status["estimatedSecondsRemaining"]) == ("Returned", 0)


def test_a_waiting_return_has_no_eta_and_no_start() -> None:
    status = returns.return_status(
        [entry(100, MIGRATED)], {}, 1, NOW, ("WaitingForNode", "waiting for pve1")
    )
    assert status["returnStartTime"] is None
    assert (status["estimatedSecondsRemaining"], status["eta"]) == (None, None)


# --- spec and the cluster-wide view ----------------------------------------------------------


def drain_body(node: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"d-{node}", "uid": "abcdef-0"},
        "spec": {"clusterRef": {"name": "lab"}, "nodeName": node, **spec},
    }


def test_maintenance_done_lifts_the_cordon_and_needs_return_guests() -> None:
    drains = [
        drain_body("pve1", returnGuests=True, maintenanceDone=True),
        drain_body("pve2", returnGuests=True),
    ]
    assert cordoned_nodes(drains, "lab") == {"pve2"}
    with pytest.raises(SpecError, match="maintenanceDone only ends a drain with"):
        NodeDrainSpec.from_spec({**drains[0]["spec"], "returnGuests": False})
    spec = NodeDrainSpec.from_spec({**drains[1]["spec"], "avoidTargets": ["pve4"]})
    assert (spec.return_guests, spec.maintenance_done, spec.avoid_targets) == (
        True,
        False,
        frozenset({"pve4"}),
    )


def test_a_returned_drain_no_longer_owns_its_node() -> None:
    returning = drain_body("pve1", returnGuests=True, maintenanceDone=True)
    returning["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    returning["status"] = {"phase": "Returning"}
    again = drain_body("pve1")
    again["metadata"].update(name="again", creationTimestamp="2026-01-02T00:00:00Z")
    assert owning_drain([returning, again], "lab", "pve1") is returning
    returning["status"] = {"phase": "Returned"}
    assert owning_drain([returning, again], "lab", "pve1") is again
    # and the Returned one is not told it duplicates the new one
    assert rival_owner(NodeDrainSpec.from_spec(again["spec"]), [returning, again], "again") is None
    assert (
        rival_owner(NodeDrainSpec.from_spec(returning["spec"]), [returning, again], "d-pve1")
        is None
    )
    assert rival_owner(NodeDrainSpec.from_spec(again["spec"]), [again], "third") == "again"


def test_returns_under_way_load_their_home_for_other_drains() -> None:
    returning = drain_body("pve1", returnGuests=True, maintenanceDone=True)
    returning["status"] = {
        "vms": [
            {**entry(100, MIGRATED).document(), "returnPhase": "Queued"},
            {**entry(101, MIGRATED).document(), "returnPhase": "Returned"},
        ]
    }
    spec = NodeDrainSpec.from_spec(drain_body("pve3")["spec"])
    assert moves_elsewhere(spec, [returning]) == {100: "pve1"}


# --- one controller pass --------------------------------------------------------------------


class FakeRuntime:
    name = "lab"
    namespace = "ns"
    label = "ns/lab"

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.engine = MigrationEngine(EnginePolicy())  # nothing in flight
        self.withdrawn: list[str] = []
        self.local_for: list[int] = []  # guests whose local resources were asked for

    async def refresh_inventory(self, max_age: float, local_for: Any = None) -> Inventory:
        """The inventory; the guests `local_for` names learn their local disks (PVE's
        precondition check): one each, `local-lvm:vm-<vmid>-disk-0`."""
        if local_for is None:
            return self.inventory
        checked = [vm for vm in self.inventory.vms if local_for(vm)]
        self.local_for += [vm.vmid for vm in checked]
        disks = {vm.vmid: (f"local-lvm:vm-{vm.vmid}-disk-0",) for vm in checked}
        vms = tuple(
            dataclasses.replace(vm, local_disks=disks.get(vm.vmid, vm.local_disks))
            for vm in self.inventory.vms
        )
        return Inventory(self.inventory.nodes, vms)

    def withdraw(self, key: str) -> bool:
        self.withdrawn.append(key)
        return True


class FakeKube:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.deleted.append(name)


class FakeDrain:
    """What `return_home` uses of a DrainReconciler."""

    def __init__(self, entries: Sequence[DrainEntry], kids: Sequence[dict[str, Any]]) -> None:
        self.body = drain_body("pve1", returnGuests=True, maintenanceDone=True)
        self.name, self.namespace, self.generation = "d-pve1", "ns", 2
        self.status: dict[str, Any] = {"vms": [e.document() for e in entries]}
        self.kids = list(kids)
        self.kube = FakeKube()
        self.created: list[tuple[int, str, str, str]] = []
        self.disks: dict[int, tuple[str, ...]] = {}  # what create_move's inventory knows
        self.written: dict[str, Any] = {}
        self.pins: dict[int, tuple[str, ...]] = {}

    def children(self, label_key: str) -> list[dict[str, Any]]:
        return self.kids

    async def create_move(self, spec: Any, context: Any, vmid: int, source: str, target: str,
                          order: int, name: str) -> bool:  # fmt: skip
        self.created.append((vmid, source, target, name))
        vm = context.inventory.vm(vmid)
        self.disks[vmid] = vm.local_disks if vm else ()
        return True

    async def pinned(self, request: DrainRequest, context: Any) -> DrainRequest:
        return DrainRequest(**{**request.__dict__, "pins": self.pins})

    async def write(self, status: Mapping[str, Any]) -> None:
        self.written = dict(status)


def inventory(pve1_online: bool = True) -> Inventory:
    nodes = tuple(
        NodeInfo(name, name != "pve1" or pve1_online, 64 * GIB, 8 * GIB, max_cpu=16)
        for name in ("pve1", "pve2", "pve3")
    )
    where = {100: "pve2", 101: "pve3", 102: "pve2", 103: "pve1"}
    vms = tuple(VMInfo(vmid, f"vm{vmid}", node, True, GIB, GIB) for vmid, node in where.items())
    return Inventory(nodes, vms)


def gauges(drain: FakeDrain) -> tuple[float, int] | None:
    """(progress, remaining) the drain's series show once the pass's status is written."""
    return drain_series.figures({**drain.status, **drain.written})


def one_pass(
    drain: FakeDrain, inv: Inventory, posted: list[tuple[str, str]]
) -> tuple[FakeDrain, FakeRuntime]:
    runtime = FakeRuntime(inv)
    cluster = ProxmoxClusterSpec.from_spec(
        {"endpoints": ["pve1"], "credentialsSecretRef": {"name": "s"}}
    )
    context = ClusterContext(runtime, cluster, inv)  # type: ignore[arg-type]
    spec = NodeDrainSpec.from_spec(drain.body["spec"])
    asyncio.run(drain_returns.return_home(drain, spec, context, [drain.body], NOW))  # type: ignore[arg-type]
    drain.status = {**drain.status, **drain.written}
    return drain, runtime


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(
        drain_returns.events,
        "post",
        lambda ref, kind, reason, message: events.append((reason, message)),
    )
    return events


def test_maintenance_done_mid_drain_stops_it_and_waits_for_running_moves(
    posted: list[tuple[str, str]],
) -> None:
    entries = [
        entry(100, MIGRATED),
        entry(101, DrainVMPhase.MIGRATING, to="pve3"),
        entry(102, DrainVMPhase.QUEUED),
        entry(103, PENDING),
    ]
    kids = [child("d-101", 101, "pve3", "Running"), child("d-102", 102, "pve2", "Queued")]
    drain, runtime = one_pass(FakeDrain(entries, kids), inventory(), posted)
    assert runtime.withdrawn == ["ns/d-102"] and drain.kube.deleted == ["d-102"]
    assert drain.created == []
    status = drain.written
    assert status["phase"] == "Returning"
    assert condition(status, "Ready")["reason"] == "WaitingForDrainMoves"
    phases = {e["vmid"]: e["phase"] for e in status["vms"]}
    assert phases == {100: "Migrated", 101: "Migrating", 102: "Skipped", 103: "Skipped"}


def test_the_return_waits_for_the_node_to_be_online(posted: list[tuple[str, str]]) -> None:
    drain, _ = one_pass(FakeDrain([entry(100, MIGRATED)], []), inventory(False), posted)
    assert drain.created == []
    assert condition(drain.written, "Ready")["reason"] == "WaitingForNode"
    assert (
        "waiting for pve1 to be online to return 1 guests"
        in condition(drain.written, "Ready")["message"]
    )


def test_the_return_is_planned_once_created_and_tracked_to_returned(
    posted: list[tuple[str, str]],
) -> None:
    entries = [entry(100, MIGRATED), entry(101, MIGRATED, to="pve3"), entry(102, MIGRATED)]
    drain = FakeDrain(entries, [])
    drain.pins = {101: ("pve3",)}
    drain, runtime = one_pass(drain, inventory(), posted)
    # PVE's verdict on their local disks decides refusals and withLocalDisks
    assert {100, 101, 102} <= set(runtime.local_for)
    assert drain.disks == {vmid: (f"local-lvm:vm-{vmid}-disk-0",) for vmid in (100, 102)}
    name = drain_returns.return_child_name("d-pve1", "abcdef-0", 100)
    assert name == "d-pve1-ret-100-abcde"
    assert [(vmid, source, target) for vmid, source, target, _ in drain.created] == [
        (100, "pve2", "pve1"),
        (102, "pve2", "pve1"),
    ]
    vms = {e["vmid"]: e for e in drain.written["vms"]}
    assert vms[100]["returnPhase"] == "Queued" and vms[100]["returnMigration"] == name
    assert (vms[101]["returnPhase"], vms[101]["returnReason"]) == (
        "ReturnSkipped",
        "a VMPlacement pins it to pve3, not pve1",
    )
    assert posted == [
        ("ReturnSkipped", "VM 101 (vm101) stays on pve3: a VMPlacement pins it to pve3, not pve1")
    ]
    assert drain.written["phase"] == "Returning"
    # the drain's gauges follow the return: 2 guests to come home of 3 (101 skipped)
    assert gauges(drain) == (0.3333, 2)

    drain.kids = [
        child(drain_returns.return_child_name("d-pve1", "abcdef-0", vmid), vmid, "pve1", phase)
        for vmid, phase in ((100, "Succeeded"), (102, "Succeeded"))
    ]
    drain.created.clear()
    drain, _ = one_pass(drain, inventory(), posted)
    assert drain.created == [] and len(posted) == 1  # planned once, reported once
    status = drain.written
    assert (status["phase"], status["returned"], status["returnSkipped"]) == ("Returned", 2, 1)
    assert status["migrated"] == 3  # the drain's own record stays
    assert (status["progress"], status["remaining"]) == (1.0, 0)
    assert gauges(drain) == (1.0, 0)
    assert condition(status, "Ready")["status"] == "True"


def test_a_drain_that_moved_nothing_is_returned_at_once(posted: list[tuple[str, str]]) -> None:
    drain, _ = one_pass(FakeDrain([entry(103, PENDING)], []), inventory(), posted)
    assert drain.written["phase"] == "Returned"
    assert parse_entries(drain.written["vms"])[0].reason == returns.NOT_MOVED
