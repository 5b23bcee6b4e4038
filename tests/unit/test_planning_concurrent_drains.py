"""One plan per cluster: a drain's placement counts the bytes other drains send to a target."""

from __future__ import annotations

from proxmigrate.inventory import Inventory
from proxmigrate.planning import MemoryReserve
from tests.unit.test_planning_drain import GIB, drain, node, targets_of, vm


def inventory() -> Inventory:
    nodes = (node("pve1", 512), node("t1", 512), node("t2", 512))
    return Inventory(nodes, tuple(vm(100 + i, 8) for i in range(6)))


def test_bytes_other_drains_send_steer_the_placement() -> None:
    alone = targets_of(drain(inventory()))
    assert sorted(alone.values()).count("t1") == 3  # equal targets share the guests evenly
    shared = targets_of(drain(inventory(), planned_elsewhere={"t1": 48 * GIB}))
    assert sorted(shared.values()).count("t2") >= 5  # t1 already receives 48 GiB elsewhere
    assert len(shared) == 6  # memory alone still decides what fits


def test_bytes_elsewhere_never_make_a_guest_unplaceable() -> None:
    plan = drain(
        inventory(),
        planned_elsewhere={"t1": 10**15, "t2": 10**15},
        reserve=MemoryReserve(0, 0.0),
    )
    assert plan.complete and len(plan.moves) == 6


def test_other_drains_not_yet_final_entries_are_the_bytes_elsewhere() -> None:
    from proxmigrate.api.drain import NodeDrainSpec
    from proxmigrate.controllers.drain_requests import planned_elsewhere

    def nodedrain(node: str, entries: list[dict[str, object]], cluster: str = "lab") -> dict:
        spec = {"clusterRef": {"name": cluster}, "nodeName": node}
        return {"metadata": {"name": f"drain-{node}"}, "spec": spec, "status": {"vms": entries}}

    def entry(to: str, phase: str, gib: int) -> dict[str, object]:
        return {"vmid": 1, "to": to, "phase": phase, "memoryBytes": gib * GIB}

    spec = NodeDrainSpec.from_spec({"clusterRef": {"name": "lab"}, "nodeName": "pve1"})
    drains = [
        nodedrain("pve1", [entry("t1", "Pending", 64)]),  # this drain itself
        nodedrain("pve2", [entry("t1", "Pending", 8), entry("t1", "Migrating", 4)]),
        nodedrain("pve3", [entry("t2", "Migrated", 16), entry("t2", "Queued", 2)]),
        nodedrain("pve4", [entry("t2", "Pending", 32)], cluster="other"),
    ]
    assert planned_elsewhere(spec, drains) == {"t1": 12 * GIB, "t2": 2 * GIB}
