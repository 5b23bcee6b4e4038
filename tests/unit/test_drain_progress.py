"""NodeDrain status derivation: plan entries, advancing from VMMigrations, window, counts."""

from __future__ import annotations

import datetime
from typing import Any

from proxmigrate.api.conditions import find_condition
from proxmigrate.controllers.children import waiting_onto
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import DrainRequest, plan_drain
from proxmigrate.runtime import drain_progress as progress

GIB = 1024**3
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def inventory(*vms: VMInfo) -> Inventory:
    nodes = tuple(NodeInfo(name, True, 64 * GIB, 0, 16) for name in ("a", "b", "c"))
    return Inventory(nodes=nodes, vms=vms)


def guest(vmid: int, memory_gib: int, node: str = "a", **extra: Any) -> VMInfo:
    return VMInfo(vmid, f"vm{vmid}", node, True, memory_gib * GIB, memory_gib * GIB // 2, **extra)


def child(vmid: int, phase: str | None, target: str = "b", **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": f"d-{vmid}"},
        "spec": {"vmid": vmid, "target": target},
    }
    body["status"] = {"phase": phase, **status} if phase else {}
    return body


def planned(*vms: VMInfo) -> list[progress.Entry]:
    return progress.plan_entries(plan_drain(inventory(*vms), DrainRequest(node="a")))


def test_plan_entries_are_pending_in_largest_first_order_then_skipped() -> None:
    entries = progress.plan_entries(
        plan_drain(
            inventory(guest(100, 2), guest(101, 8), guest(102, 4, local_devices=("hostpci0",))),
            DrainRequest(node="a", local_disks="skip"),
        )
    )
    moves = [e for e in entries if e["phase"] == "Pending"]
    assert [e["vmid"] for e in moves] == [101, 100]
    assert [e["order"] for e in moves] == [1, 2]
    assert entries[-1]["vmid"] == 102 and entries[-1]["phase"] == "Skipped"
    assert entries[-1]["reason"].startswith("unplaceable:")


def test_advance_maps_migration_phases_and_outside_moves() -> None:
    entries = planned(guest(100, 1), guest(101, 2), guest(102, 3), guest(103, 4), guest(104, 5))
    children = {
        100: child(100, "Succeeded"),
        101: child(101, "Running"),
        102: child(102, "Failed", message="attempt 5 failed: ssh"),
        103: child(103, None),
    }
    location = {100: "b", 101: "a", 102: "a", 103: "a", 104: "c"}
    by_vmid = {e["vmid"]: e for e in progress.advance(entries, children, location)}
    assert by_vmid[100]["phase"] == "Migrated" and by_vmid[100]["migration"] == "d-100"
    assert by_vmid[101]["phase"] == "Migrating"
    assert (by_vmid[102]["phase"], by_vmid[102]["reason"]) == ("Failed", "attempt 5 failed: ssh")
    assert by_vmid[103]["phase"] == "Queued"
    assert by_vmid[104]["phase"] == "Migrated" and "now on c" in by_vmid[104]["reason"]


def test_a_deleted_child_fails_its_vm_and_a_vanished_vm_is_skipped() -> None:
    entries = [
        {**e, "phase": "Queued", "migration": f"d-{e['vmid']}"}
        for e in planned(guest(100, 1), guest(101, 1))
    ]
    by_vmid = {e["vmid"]: e for e in progress.advance(entries, {}, {100: "a"})}
    assert by_vmid[100]["phase"] == "Failed" and "was deleted" in by_vmid[100]["reason"]
    assert by_vmid[101]["phase"] == "Skipped"


def test_window_keeps_in_flight_at_most_max_parallel_in_plan_order() -> None:
    entries = planned(*(guest(100 + i, 1 + i) for i in range(5)))
    entries[0]["phase"] = "Migrating"
    due = progress.due_for_migration(entries, window=3)
    assert [e["order"] for e in due] == [2, 3]
    assert len(progress.due_for_migration(entries, window=None)) == 4
    entries[1]["phase"] = entries[2]["phase"] = "Queued"
    assert progress.due_for_migration(entries, window=3) == []


def test_new_arrivals_get_orders_after_the_known_ones() -> None:
    entries = planned(guest(100, 1), guest(101, 2))
    fresh = plan_drain(inventory(guest(100, 1), guest(101, 2), guest(150, 4)), DrainRequest("a"))
    arrivals = progress.new_arrivals(entries, fresh)
    assert [(e["vmid"], e["order"]) for e in arrivals] == [(150, 3)]


def test_status_counts_phase_eta_and_conditions() -> None:
    entries = planned(guest(100, 4), guest(101, 4), guest(102, 4))
    entries[0]["phase"] = "Migrated"
    entries[1]["phase"] = "Migrating"
    current = {"startTime": "2026-01-01T11:59:50Z"}
    status = progress.progress_status(entries, current, 3, NOW)
    assert (status["phase"], status["total"], status["migrated"], status["remaining"]) == (
        "Draining",
        3,
        1,
        2,
    )
    assert status["progress"] == round(1 / 3, 4)
    assert status["memoryBytesMigrated"] == 4 * GIB and status["memoryBytesTotal"] == 12 * GIB
    # 4 GiB in 10 s, one move running: the remaining 8 GiB on two targets take >= 10 s
    assert status["estimatedSecondsRemaining"] >= 10 and status["eta"]
    assert find_condition(status["conditions"], "Progressing")["status"] == "True"
    assert find_condition(status["conditions"], "Ready")["observedGeneration"] == 3

    entries[1]["phase"] = "Migrated"
    entries[2] = {**entries[2], "phase": "Failed", "reason": "ssh dropped"}
    final = progress.progress_status(entries, status, 3, NOW)
    assert final["phase"] == "Failed" and final["completionTime"] == "2026-01-01T12:00:00Z"
    degraded = find_condition(final["conditions"], "Degraded")
    assert degraded["status"] == "True" and "102: ssh dropped" in degraded["message"]


def test_everything_moved_or_skipped_is_drained_and_ready() -> None:
    entries = planned(guest(100, 1))
    entries[0]["phase"] = "Migrated"
    status = progress.progress_status(entries, {}, 1, NOW)
    assert status["phase"] == "Drained" and status["progress"] == 1
    assert find_condition(status["conditions"], "Ready")["status"] == "True"


def test_priority_follows_plan_order_within_the_crd_bounds() -> None:
    assert progress.migration_priority(1) > progress.migration_priority(2)
    assert progress.migration_priority(5000) == -1000


def test_moves_not_started_onto_a_newly_cordoned_node_are_planned_again_elsewhere() -> None:
    entries = planned(guest(100, 8), guest(101, 4), guest(102, 2))
    entries[1] = {**entries[1], "phase": "Queued"}  # already handed to the engine: kept
    onto_b = {e["vmid"] for e in entries if e.get("to") == "b" and e["phase"] == "Pending"}
    kept = progress.without_moves_onto(entries, {"a", "b"})
    assert onto_b  # the plan used b for a move that has not started
    assert not onto_b & {e["vmid"] for e in kept}
    assert entries[1]["vmid"] in {e["vmid"] for e in kept}
    replanned = plan_drain(
        inventory(guest(100, 8), guest(101, 4), guest(102, 2)),
        DrainRequest(node="a", cordoned=frozenset({"b"})),
    )
    again = progress.new_arrivals(kept, replanned)
    assert {e["vmid"] for e in again} == onto_b
    assert {e["to"] for e in again} == {"c"}


def test_queued_moves_onto_a_newly_cordoned_node_are_withdrawn_and_planned_again() -> None:
    entries = planned(guest(100, 8), guest(101, 4), guest(102, 2))
    children = {
        100: child(100, "Queued", target="b"),
        101: child(101, "Running", target="b"),  # started: it goes where it goes
        102: child(102, None, target="c"),  # not onto the cordoned node
    }
    waiting = waiting_onto(children.values(), {"a", "b"})
    assert [c["metadata"]["name"] for c in waiting] == ["d-100"]
    assert waiting_onto([child(100, None, target="b")], {"b"})  # not seen by the runtime yet
    advanced = progress.advance(entries, children, {100: "a", 101: "a", 102: "a"})
    kept = progress.without_moves_onto(advanced, {"a", "b"}, {100})
    assert [e["vmid"] for e in kept] == [e["vmid"] for e in advanced if e["vmid"] != 100]
    replanned = plan_drain(
        inventory(guest(100, 8), guest(101, 4), guest(102, 2)),
        DrainRequest(node="a", cordoned=frozenset({"b"})),
    )
    again = progress.new_arrivals(kept, replanned)
    assert [(e["vmid"], e["to"], e["phase"]) for e in again] == [(100, "c", "Pending")]


def test_an_entry_follows_where_its_vmmigration_goes() -> None:
    entries = planned(guest(100, 8))
    planned_to = entries[0]["to"]
    elsewhere = "c" if planned_to == "b" else "b"
    (entry,) = progress.advance(entries, {100: child(100, "Queued", target=elsewhere)}, {100: "a"})
    assert entry["to"] == elsewhere
