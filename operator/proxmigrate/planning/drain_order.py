"""The order a drain's guests leave in.

Each target's guests alternate largest and smallest (largest, smallest, 2nd
largest, 2nd smallest, ...), interleaved by always drawing from the target with the
fewest bytes scheduled so far for its link (bytes over its weight). Parallel moves then
hit distinct targets (no single link or sshd carries the start of the drain) and every
target finishes at about the same time. Pure largest-first would leave only small guests
for the end, whose fixed cost per migration (qm start, tunnel, cleanup: 4-7 s,
docs/reference/proxmox.md #figures-and-measurements) then runs with the link idle;
alternating lets small guests pass their fixed cost while large ones fill the link
(bench/RESULTS.md: 1.23x -> 1.13x of the bandwidth bound at 8 parallel).

An HA-managed guest's request only hands the move to PVE's HA manager: the CRM takes it on
its next 10 s round and the source node's LRM forks the `qmigrate` on its own next 10 s
round (qemu-server `src/PVE/API2/Qemu.pm` migrate_vm; pve-ha-manager `src/PVE/HA/CRM.pm`
and `src/PVE/HA/LRM.pm` work, `$max_time = 10`; LRM.pm manage_resources takes the services
of its own node; docs/reference/proxmox.md #ha-migrations), so it sends nothing for up to
20 s. Among a drain's last moves that wait is the drain's own tail; ahead of them it
overlaps other guests' transfers. So no HA guest is among the last `HA_TAIL_MOVES`: such
ones leave just before them, in their order, and everything else keeps its place; a drain
no longer than that starts with them. Moving HA guests further forward in longer drains
(first, or spread from the start) measured worse (bench/RESULTS.md, issue 13 seventeenth
pass).
"""

from __future__ import annotations

from collections.abc import Mapping

from proxmigrate.inventory import VMInfo
from proxmigrate.planning.capacity import memory_need, move_cost, transfer_bytes
from proxmigrate.planning.drain_plan import PlannedMove

# The last moves of a drain are small guests started a few seconds apart: 8 of them span
# more than an HA hand-off's two rounds (6 to 12 measured alike, bench/RESULTS.md).
HA_TAIL_MOVES = 8


def ordered_moves(
    placed: list[tuple[VMInfo, str]], source: str, weights: Mapping[str, float]
) -> tuple[PlannedMove, ...]:
    """Per target largest and smallest in turn, interleaved by drawing from the target
    least scheduled for its link; no HA guest among the last moves (see the module
    docstring)."""
    lanes: dict[str, list[VMInfo]] = {}
    for vm, target in placed:
        lanes.setdefault(target, []).append(vm)
    for target, lane in lanes.items():
        lane.sort(key=lambda vm: (move_cost(vm), memory_need(vm), -vm.vmid))
        zigzag = [lane.pop() if index % 2 == 0 else lane.pop(0) for index in range(len(lane))]
        lanes[target] = zigzag[::-1]  # pop() = next: largest, smallest, 2nd largest, ...
    scheduled = dict.fromkeys(lanes, 0)
    order: list[VMInfo] = []
    while any(lanes.values()):
        target = min(
            (name for name, lane in lanes.items() if lane),
            key=lambda name: (
                scheduled[name] / weights[name],
                -move_cost(lanes[name][-1]),
                name,
            ),
        )
        vm = lanes[target].pop()
        scheduled[target] += move_cost(vm)
        order.append(vm)
    target_of = {vm.vmid: target for vm, target in placed}
    return tuple(
        PlannedMove(
            vmid=vm.vmid,
            name=vm.name,
            memory_bytes=memory_need(vm),
            transfer_bytes=transfer_bytes(vm),
            source=source,
            target=target_of[vm.vmid],
            order=index,
            online=vm.running,
            with_local_disks=bool(vm.local_disks),
        )
        for index, vm in enumerate(_handoffs_before_tail(order))
    )


def _handoffs_before_tail(order: list[VMInfo]) -> list[VMInfo]:
    """`order` with its HA guests among the last HA_TAIL_MOVES moved just before them."""
    tail = order[-HA_TAIL_MOVES:]
    handed_off = [vm for vm in tail if vm.ha_managed]
    if not handed_off:
        return order
    rest = order[: -len(tail)] + [vm for vm in tail if not vm.ha_managed]
    cut = max(0, len(order) - HA_TAIL_MOVES)
    return rest[:cut] + handed_off + rest[cut:]
