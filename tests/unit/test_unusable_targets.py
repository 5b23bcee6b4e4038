"""Moves not started yet are planned again when their target is cordoned or goes offline."""

from __future__ import annotations

from proxmigrate.controllers.context import unusable_targets
from proxmigrate.inventory import Inventory, NodeInfo
from proxmigrate.runtime.drain_progress import without_moves_onto

GIB = 1024**3


def test_an_offline_node_is_no_target_for_moves_not_started() -> None:
    nodes = (
        NodeInfo("pve1", True, 64 * GIB, 8 * GIB, 16),
        NodeInfo("pve2", False, 64 * GIB, 8 * GIB, 16),
        NodeInfo("pve3", True, 64 * GIB, 8 * GIB, 16),
    )
    unusable = unusable_targets(frozenset({"pve1"}), Inventory(nodes, (), taken_at=0.0))
    assert unusable == {"pve1", "pve2"}
    entries = [
        {"vmid": 100, "from": "pve1", "to": "pve2", "phase": "Pending"},
        {"vmid": 101, "from": "pve1", "to": "pve3", "phase": "Pending"},
    ]
    assert [e["vmid"] for e in without_moves_onto(entries, unusable)] == [101]
