"""Targets PVE's precondition check refuses for a guest (`not_allowed_nodes` with a reason:
storage, device mapping or HA affinity) are never planned; others still are."""

from __future__ import annotations

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import (
    DrainRequest,
    MemoryReserve,
    PlacementAction,
    PlacementRequest,
    UnplaceableCause,
    plan_drain,
    plan_placement,
)

GIB = 1024**3
NO_RESERVE = MemoryReserve(min_bytes=0, ratio=0.0)
FAST_ONLY_ON_PVE2 = (("pve3", "storage fast unavailable"),)


def inventory(*vms: VMInfo) -> Inventory:
    nodes = tuple(NodeInfo(name, True, 64 * GIB, 0, 16) for name in ("pve1", "pve2", "pve3"))
    return Inventory(nodes, vms)


def guest(vmid: int, refused: tuple[tuple[str, str], ...] = ()) -> VMInfo:
    return VMInfo(vmid, f"vm{vmid}", "pve1", True, 4 * GIB, 4 * GIB, refused_targets=refused)


def test_a_drain_plans_no_guest_onto_a_node_pve_refuses_for_it() -> None:
    inv = inventory(guest(100, FAST_ONLY_ON_PVE2), guest(101))
    plan = plan_drain(inv, DrainRequest(node="pve1", targets=("pve3",), reserve=NO_RESERVE))
    assert [move.vmid for move in plan.moves] == [101]
    [refused] = plan.unplaceable
    assert refused.vmid == 100 and refused.cause is UnplaceableCause.NO_TARGETS
    assert refused.reason == "no eligible target: pve3 refused by PVE (storage fast unavailable)"
    both = plan_drain(inv, DrainRequest(node="pve1", reserve=NO_RESERVE))
    assert {move.vmid: move.target for move in both.moves}[100] == "pve2"


def test_a_placement_skips_a_node_pve_refuses_and_says_why() -> None:
    inv = inventory(guest(100, FAST_ONLY_ON_PVE2))
    [to_second] = plan_placement(inv, PlacementRequest(nodes=("pve3", "pve2"), vmid=100))
    assert (to_second.action, to_second.desired_node) == (PlacementAction.MOVE, "pve2")
    [blocked] = plan_placement(inv, PlacementRequest(nodes=("pve3",), vmid=100))
    assert blocked.action is PlacementAction.BLOCKED
    assert "pve3 refused by PVE (storage fast unavailable)" in blocked.reason
