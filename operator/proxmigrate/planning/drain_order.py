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
"""

from __future__ import annotations

from collections.abc import Mapping

from proxmigrate.inventory import VMInfo
from proxmigrate.planning.capacity import memory_need, move_cost, transfer_bytes
from proxmigrate.planning.drain_plan import PlannedMove


def ordered_moves(
    placed: list[tuple[VMInfo, str]], source: str, weights: Mapping[str, float]
) -> tuple[PlannedMove, ...]:
    """Per target largest and smallest in turn, interleaved by drawing from the target
    least scheduled for its link (see the module docstring)."""
    lanes: dict[str, list[VMInfo]] = {}
    for vm, target in placed:
        lanes.setdefault(target, []).append(vm)
    for target, lane in lanes.items():
        lane.sort(key=lambda vm: (move_cost(vm), memory_need(vm), -vm.vmid))
        zigzag = [lane.pop() if index % 2 == 0 else lane.pop(0) for index in range(len(lane))]
        lanes[target] = zigzag[::-1]  # pop() = next: largest, smallest, 2nd largest, ...
    scheduled = dict.fromkeys(lanes, 0)
    moves: list[PlannedMove] = []
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
        moves.append(
            PlannedMove(
                vmid=vm.vmid,
                name=vm.name,
                memory_bytes=memory_need(vm),
                transfer_bytes=transfer_bytes(vm),
                source=source,
                target=target,
                order=len(moves),
                online=vm.running,
                with_local_disks=bool(vm.local_disks),
            )
        )
    return tuple(moves)
