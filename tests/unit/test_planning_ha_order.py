"""Drain order of HA-managed guests: never among a drain's last moves, whose tail their
hand-off to the HA manager would lengthen; every other guest keeps its place."""

from __future__ import annotations

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import DrainPlan, DrainRequest, MemoryReserve, plan_drain
from proxmigrate.planning.drain_order import HA_TAIL_MOVES

GIB = 1024**3


def _node(name: str) -> NodeInfo:
    return NodeInfo(name, True, 1024 * GIB, 0, 16, 0.0)


def _vm(vmid: int, gib: int, ha_state: str | None = None) -> VMInfo:
    return VMInfo(
        vmid=vmid,
        name=f"vm{vmid}",
        node="pve1",
        running=True,
        max_memory=gib * GIB,
        used_memory=gib * GIB,
        ha_state=ha_state,
    )


def _plan(sizes: dict[int, int], ha: dict[int, str]) -> DrainPlan:
    """A drain of pve1 onto pve2, guest vmid of sizes[vmid] GiB, HA states from `ha`."""
    vms = tuple(_vm(vmid, gib, ha.get(vmid)) for vmid, gib in sizes.items())
    inventory = Inventory(nodes=(_node("pve1"), _node("pve2")), vms=vms)
    request = DrainRequest(node="pve1", reserve=MemoryReserve(min_bytes=0, ratio=0.0))
    return plan_drain(inventory, request)


def _order(plan: DrainPlan) -> list[int]:
    assert [move.order for move in plan.moves] == list(range(len(plan.moves)))
    return [move.vmid for move in plan.moves]


SIZES = {100 + index: index + 1 for index in range(20)}  # 1 to 20 GiB


def test_an_ha_guest_the_tail_would_end_with_leaves_just_before_the_tail() -> None:
    plain = _order(_plan(SIZES, {}))
    last = plain[-1]  # the zigzag ends with a mid-sized guest
    moved = _order(_plan(SIZES, {last: "started"}))
    assert moved.index(last) == len(plain) - HA_TAIL_MOVES
    assert [vmid for vmid in moved if vmid != last] == plain[:-1]


def test_several_ha_guests_of_the_tail_keep_their_order_and_the_others_theirs() -> None:
    plain = _order(_plan(SIZES, {}))
    handed_off = plain[-HA_TAIL_MOVES:][::3]
    moved = _order(_plan(SIZES, dict.fromkeys(handed_off, "started")))
    cut = len(plain) - HA_TAIL_MOVES
    assert moved[cut : cut + len(handed_off)] == handed_off
    assert [vmid for vmid in moved if vmid not in handed_off] == [
        vmid for vmid in plain if vmid not in handed_off
    ]


def test_ha_guests_ahead_of_the_tail_and_ignored_ones_change_nothing() -> None:
    plain = _order(_plan(SIZES, {}))
    early = plain[: len(plain) - HA_TAIL_MOVES]
    # `ignored`: PVE migrates it directly (pve-ha-manager HA/Config.pm vm_is_ha_managed)
    ha = dict.fromkeys(early[::2], "started") | {plain[-1]: "ignored"}
    assert _order(_plan(SIZES, ha)) == plain


def test_a_drain_no_longer_than_the_tail_starts_with_its_ha_guests() -> None:
    sizes = {100: 8, 101: 1, 102: 6, 103: 2, 104: 4}
    plain = _order(_plan(sizes, {}))
    moved = _order(_plan(sizes, {101: "started", 103: "started"}))
    assert moved[:2] == [vmid for vmid in plain if vmid in (101, 103)]
    assert moved[2:] == [vmid for vmid in plain if vmid not in (101, 103)]
