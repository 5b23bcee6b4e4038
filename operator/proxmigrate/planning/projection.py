"""The inventory as it will be once moves already under way have finished (pure).

A drain that plans again mid-way (for guests that appeared on its node) must count the
guests it is still moving as already on their targets, or it would offer the same free
memory twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from proxmigrate.inventory import Inventory, NodeInfo
from proxmigrate.planning.capacity import memory_need


def with_pending_moves(inventory: Inventory, moves: Mapping[int, str]) -> Inventory:
    """`inventory` with each guest of `moves` (vmid -> target node) placed on its target.

    The target's used memory grows by the guest's memory need; a running guest's usage is
    released on its source. Unknown guests, unknown targets and guests already there are
    left as they are.
    """
    used = {node.name: node.used_memory for node in inventory.nodes}
    vms = []
    for vm in inventory.vms:
        target = moves.get(vm.vmid)
        if target is None or target == vm.node or target not in used:
            vms.append(vm)
            continue
        used[target] += memory_need(vm)
        if vm.running:
            used[vm.node] = max(0, used[vm.node] - vm.used_memory)
        vms.append(replace(vm, node=target))
    nodes: tuple[NodeInfo, ...] = tuple(
        replace(node, used_memory=used[node.name]) for node in inventory.nodes
    )
    return Inventory(nodes, tuple(vms), taken_at=inventory.taken_at)
