"""Planning again mid-drain counts the moves under way as done."""

from __future__ import annotations

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import DrainRequest, MemoryReserve, plan_drain, with_pending_moves

GIB = 1024**3


def test_pending_moves_occupy_their_targets_so_arrivals_go_elsewhere() -> None:
    nodes = (
        NodeInfo("pve1", True, 64 * GIB, 24 * GIB, 16),
        NodeInfo("pve2", True, 32 * GIB, 8 * GIB, 16),  # room for one 16 GiB guest
        NodeInfo("pve3", True, 64 * GIB, 40 * GIB, 16),  # room for one 16 GiB guest too
    )
    vms = (
        VMInfo(100, "queued", "pve1", True, 16 * GIB, 8 * GIB),
        VMInfo(101, "arrived", "pve1", True, 16 * GIB, 8 * GIB),
    )
    inventory = Inventory(nodes, vms)
    request = DrainRequest(node="pve1", reserve=MemoryReserve(min_bytes=0, ratio=0.0))
    first = {move.vmid: move.target for move in plan_drain(inventory, request).moves}
    assert first[100] != first[101]  # one guest per target, as memory allows
    projected = with_pending_moves(inventory, {100: "pve2"})
    assert projected.node("pve2").used_memory == 24 * GIB  # type: ignore[union-attr]
    assert projected.node("pve1").used_memory == 16 * GIB  # type: ignore[union-attr]
    assert projected.vm(100).node == "pve2"  # type: ignore[union-attr]
    again = plan_drain(projected, request)
    assert [(m.vmid, m.target) for m in again.moves] == [(101, "pve3")]
    unprojected = {m.vmid: m.target for m in plan_drain(inventory, request).moves}
    assert 100 in unprojected  # without the projection the queued guest is planned twice


def test_unknown_guests_and_targets_are_left_alone() -> None:
    inventory = Inventory(
        (NodeInfo("pve1", True, 8 * GIB, GIB, 4),), (VMInfo(1, "a", "pve1", True, GIB),)
    )
    assert with_pending_moves(inventory, {1: "nowhere", 2: "pve1"}) == inventory
