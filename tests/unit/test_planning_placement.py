"""VMPlacement planner: desired node from a preference list, and clear errors for bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import (
    MemoryReserve,
    PlacementAction,
    PlacementRequest,
    PlanError,
    VMSelector,
    plan_placement,
)

GIB = 1024**3
NO_RESERVE = MemoryReserve(min_bytes=0, ratio=0.0)


def cluster(*vms: VMInfo, pve3_used_gib: int = 0, pve3_online: bool = True) -> Inventory:
    nodes = (
        NodeInfo("pve1", True, 64 * GIB, 0, 16),
        NodeInfo("pve2", True, 64 * GIB, 0, 16),
        NodeInfo("pve3", pve3_online, 64 * GIB, pve3_used_gib * GIB, 16),
    )
    return Inventory(nodes=nodes, vms=vms)


def guest(vmid: int, on: str, mem_gib: int = 4, **kw: object) -> VMInfo:
    return VMInfo(vmid, f"vm{vmid}", on, True, mem_gib * GIB, mem_gib * GIB, **kw)  # type: ignore[arg-type]


def place(inv: Inventory, **kw: object) -> list[tuple[int, PlacementAction, str | None, str]]:
    kw.setdefault("reserve", NO_RESERVE)
    decisions = plan_placement(inv, PlacementRequest(**kw))  # type: ignore[arg-type]
    return [(d.vmid, d.action, d.desired_node, d.reason) for d in decisions]


def test_in_sync_and_move() -> None:
    inv = cluster(guest(120, "pve2"), guest(121, "pve1"))
    assert place(inv, vmid=120, nodes=("pve2",)) == [
        (120, PlacementAction.IN_SYNC, "pve2", "on pve2")
    ]
    assert place(inv, name="vm121", nodes=("pve2",)) == [
        (121, PlacementAction.MOVE, "pve2", "pve1 -> pve2")
    ]


def test_preference_list_falls_back_and_returns_when_first_choice_is_back() -> None:
    inv = cluster(guest(120, "pve1"))
    during_drain = place(inv, vmid=120, nodes=("pve3", "pve2"), cordoned=frozenset({"pve3"}))
    assert during_drain == [(120, PlacementAction.MOVE, "pve2", "pve1 -> pve2")]
    moved = cluster(guest(120, "pve2"))
    assert place(moved, vmid=120, nodes=("pve3", "pve2"))[0][1:3] == (PlacementAction.MOVE, "pve3")


def test_blocked_lists_every_nodes_reason() -> None:
    inv = cluster(
        guest(120, "pve1", mem_gib=16, tags=frozenset({"anti-affinity_db"})),
        guest(130, "pve2", tags=frozenset({"anti-affinity_db"})),
        pve3_used_gib=56,
    )
    ((vmid, action, desired, reason),) = place(inv, vmid=120, nodes=("pve2", "pve3"))
    assert (vmid, action, desired) == (120, PlacementAction.BLOCKED, None)
    assert reason == (
        "no desired node usable: pve2 holds anti-affinity group db (vm 130); "
        "pve3 has 8.0 GiB free, needs 16.0 GiB"
    )
    cordoned = place(inv, vmid=120, nodes=("pve2",), cordoned=frozenset({"pve2"}))
    assert cordoned[0][3] == "no desired node usable: pve2 cordoned by a NodeDrain"
    offline = place(cluster(guest(120, "pve1"), pve3_online=False), vmid=120, nodes=("pve3",))
    assert offline[0][3] == "no desired node usable: pve3 offline"


def test_moves_in_one_call_share_the_target_memory() -> None:
    inv = cluster(
        *(guest(vmid, "pve1", tags=frozenset({"web"})) for vmid in (101, 102, 103)),
        pve3_used_gib=56,
    )
    decisions = place(inv, selector=VMSelector(tags=frozenset({"web"})), nodes=("pve3",))
    assert [d[1] for d in decisions] == [
        PlacementAction.MOVE,
        PlacementAction.MOVE,
        PlacementAction.BLOCKED,
    ]


def test_local_devices_block_a_move() -> None:
    inv = cluster(guest(120, "pve1", local_devices=("hostpci0",)))
    assert place(inv, vmid=120, nodes=("pve2",))[0][1] is PlacementAction.BLOCKED


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        (
            {"name": "twin", "nodes": ("pve2",)},
            "name 'twin' matches 2 VMs (201 on pve1, 202 on pve2): select by vmid",
        ),
        ({"name": "ghost", "nodes": ("pve2",)}, "no VM is named 'ghost'"),
        ({"vmid": 999, "nodes": ("pve2",)}, "VM 999 does not exist"),
        ({"vmid": 201, "nodes": ("pve9",)}, "node 'pve9' is not in the cluster"),
        ({"vmid": 201, "nodes": ()}, "no node given"),
        (
            {"selector": VMSelector(pools=frozenset({"none"})), "nodes": ("pve2",)},
            "selector matches no VM",
        ),
        (
            {"vmid": 201, "name": "twin", "nodes": ("pve2",)},
            "exactly one of vmid, name or selector",
        ),
    ],
)
def test_bad_requests_raise_plan_error(request_kw: dict[str, object], message: str) -> None:
    twins = VMInfo(201, "twin", "pve1", True, GIB), VMInfo(202, "twin", "pve2", True, GIB)
    with pytest.raises(PlanError) as error:
        plan_placement(cluster(*twins), PlacementRequest(**request_kw))  # type: ignore[arg-type]
    assert message in str(error.value)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["pve1", "pve2", "pve3"]), st.sampled_from([1, 8, 24])),
        max_size=12,
    ),
    st.lists(st.sampled_from(["pve1", "pve2", "pve3"]), min_size=1, max_size=3, unique=True),
    st.sets(st.sampled_from(["pve1", "pve2", "pve3"]), max_size=1),
    st.integers(0, 64),
)
def test_placement_properties(
    layout: list[tuple[str, int]], nodes: list[str], cordoned: set[str], pve3_used: int
) -> None:
    vms = [guest(100 + i, on, mem, tags=frozenset({"sel"})) for i, (on, mem) in enumerate(layout)]
    inv = cluster(*vms, pve3_used_gib=pve3_used)
    request = PlacementRequest(
        selector=VMSelector(), nodes=tuple(nodes), cordoned=frozenset(cordoned)
    )
    if not vms:
        with pytest.raises(PlanError):
            plan_placement(inv, request)
        return
    decisions = plan_placement(inv, request)
    assert [d.vmid for d in decisions] == sorted(v.vmid for v in vms)
    assert plan_placement(inv, request) == decisions
    incoming: dict[str, int] = {}
    for decision in decisions:
        if decision.action is PlacementAction.BLOCKED:
            assert decision.desired_node is None and decision.reason
            continue
        assert decision.desired_node in nodes and decision.desired_node not in cordoned
        assert decision.in_sync == (decision.desired_node == decision.current_node)
        if decision.action is PlacementAction.MOVE:
            incoming[decision.desired_node] = incoming.get(decision.desired_node, 0) + (
                vms[decision.vmid - 100].max_memory
            )
    for name, claimed in incoming.items():
        info = inv.node(name)
        assert info is not None
        reserve = MemoryReserve().for_node(info)
        assert claimed <= info.max_memory - info.used_memory - reserve
