"""Rolling maintenance planner, return home and the drain planner's avoided targets:
worked examples, then properties over random clusters."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import DrainRequest, MemoryReserve, PlanError, plan_drain
from proxmigrate.planning.returns import Departure, plan_return
from proxmigrate.planning.rolling import RollingPlan, RollingRequest, plan_rolling, rolling_steps

GIB = 1024**3
NO_RESERVE = MemoryReserve(min_bytes=0, ratio=0.0)
OPTIONS = DrainRequest(node="", reserve=NO_RESERVE)


def node(name: str, max_gib: float, used_gib: float = 0, online: bool = True) -> NodeInfo:
    return NodeInfo(name, online, int(max_gib * GIB), int(used_gib * GIB), max_cpu=16)


def vm(vmid: int, mem_gib: float, on: str, **kw: object) -> VMInfo:
    memory = int(mem_gib * GIB)
    return VMInfo(vmid, f"vm{vmid}", on, True, memory, memory, **kw)  # type: ignore[arg-type]


def cluster(sizes: Mapping[str, float], guests: list[VMInfo]) -> Inventory:
    """Nodes of `sizes` GiB whose used memory is exactly their guests' memory."""
    used: dict[str, int] = defaultdict(int)
    for guest in guests:
        used[guest.node] += guest.max_memory
    nodes = tuple(
        NodeInfo(name, True, int(gib * GIB), used[name], max_cpu=16) for name, gib in sizes.items()
    )
    return Inventory(nodes, tuple(guests))


def rolling(inv: Inventory, nodes: tuple[str, ...], **kw: object) -> RollingPlan:
    kw.setdefault("options", OPTIONS)
    return plan_rolling(inv, RollingRequest(nodes, **kw))  # type: ignore[arg-type]


def final_nodes(inv: Inventory, plan: RollingPlan) -> dict[int, str]:
    where = {guest.vmid: guest.node for guest in inv.vms}
    for move in plan.moves:
        assert where[move.vmid] == move.source, f"vm {move.vmid} moves from where it is not"
        where[move.vmid] = move.target
    return where


# --- the drain planner's avoided targets ------------------------------------------------------


def test_drain_avoids_a_target_while_another_has_room() -> None:
    inv = cluster({"pve1": 64, "pve2": 64, "pve3": 32}, [vm(101, 8, "pve1"), vm(102, 8, "pve1")])
    plain = plan_drain(inv, replace(OPTIONS, node="pve1"))
    avoiding = plan_drain(inv, replace(OPTIONS, node="pve1", avoid=frozenset({"pve2"})))
    assert "pve2" in {move.target for move in plain.moves}
    assert {move.target for move in avoiding.moves} == {"pve3"}


def test_drain_takes_an_avoided_target_when_nothing_else_fits() -> None:
    inv = cluster({"pve1": 64, "pve2": 64, "pve3": 12}, [vm(101, 8, "pve1"), vm(102, 8, "pve1")])
    plan = plan_drain(inv, replace(OPTIONS, node="pve1", avoid=frozenset({"pve2"})))
    assert plan.complete
    assert sorted(move.target for move in plan.moves) == ["pve2", "pve3"]


def test_pinned_guest_skips_an_avoided_node_of_its_pin_when_a_later_one_fits() -> None:
    inv = cluster({"pve1": 64, "pve2": 64, "pve3": 64}, [vm(101, 8, "pve1")])
    pins = {101: ("pve2", "pve3")}
    plan = plan_drain(inv, replace(OPTIONS, node="pve1", pins=pins, avoid=frozenset({"pve2"})))
    assert [move.target for move in plan.moves] == ["pve3"]


# --- rolling plans ----------------------------------------------------------------------------


def four_nodes() -> Inventory:
    guests = [vm(100 * n + i, 4, f"pve{n}") for n in range(1, 5) for i in range(3)]
    return cluster({"pve1": 32, "pve2": 32, "pve3": 32, "pve4": 32}, guests)


def test_four_node_rolling_returns_every_guest_home_without_parking_on_later_nodes() -> None:
    inv = four_nodes()
    plan = rolling(inv, ("pve1", "pve2", "pve3", "pve4"))
    assert [step.nodes for step in plan.steps] == [("pve1",), ("pve2",), ("pve3",), ("pve4",)]
    assert plan.first_blocked is None
    assert final_nodes(inv, plan) == {guest.vmid: guest.node for guest in inv.vms}
    # step 1 has no target but later nodes; from step 2 on, maintained nodes take the guests
    assert set(plan.steps[0].parked_on_later) == {100, 101, 102}
    for index, step in enumerate(plan.steps[1:], start=2):
        assert not step.parked_on_later
        assert {move.target for move in step.drains[0].moves} <= {
            f"pve{n}" for n in range(1, index)
        }
    assert all(len(step.returns.moves) == 3 and not step.returns.skipped for step in plan.steps)
    assert len(plan.moves) == 24
    assert plan.total_transfer_bytes == 24 * 4 * GIB


def test_a_guest_is_parked_on_a_later_node_only_when_nothing_else_has_room() -> None:
    guests = [vm(101, 12, "pve1"), vm(201, 4, "pve2"), vm(301, 4, "pve3")]
    inv = cluster({"pve1": 32, "pve2": 32, "pve3": 8}, guests)
    plan = rolling(inv, ("pve1", "pve2"), return_guests=False)
    first, second = plan.steps
    assert [move.target for move in first.drains[0].moves] == ["pve2"]
    assert first.parked_on_later == (101,)
    # parked on pve2, 101 moves again when pve2 is drained: the extra move is in the plan
    assert {move.vmid for move in second.drains[0].moves} == {101, 201}


def test_without_return_guests_stay_where_the_drain_put_them() -> None:
    inv = four_nodes()
    plan = rolling(inv, ("pve1", "pve2"), return_guests=False)
    assert all(not step.returns.moves for step in plan.steps)
    where = final_nodes(inv, plan)
    assert all(where[vmid] not in ("pve1", "pve2") for vmid in (100, 101, 102))
    assert all(where[vmid] != "pve2" for vmid in (200, 201, 202))  # pve1, done, may take them
    assert len(plan.moves) == 6  # no guest of pve1 went to pve2 to move again


def test_nodes_of_one_step_are_cordoned_together() -> None:
    inv = four_nodes()
    plan = rolling(inv, ("pve1", "pve2", "pve3", "pve4"), at_once=2)
    assert [step.nodes for step in plan.steps] == [("pve1", "pve2"), ("pve3", "pve4")]
    first = plan.steps[0]
    assert {move.target for move in first.drains[0].moves + first.drains[1].moves} <= {
        "pve3",
        "pve4",
    }
    assert final_nodes(inv, plan) == {guest.vmid: guest.node for guest in inv.vms}


def test_a_step_that_cannot_fit_is_blocked_with_what_is_missing() -> None:
    guests = [vm(101, 20, "pve1"), vm(201, 10, "pve2"), vm(301, 10, "pve3")]
    inv = cluster({"pve1": 24, "pve2": 24, "pve3": 24}, guests)
    plan = rolling(inv, ("pve1", "pve2"))
    blocked = plan.first_blocked
    assert blocked is not None and blocked.index == 1
    assert blocked.missing_memory_bytes == 6 * GIB
    message = blocked.blocked_message()
    assert message.startswith("step 1 (pve1) lacks 6.0 GiB of memory: pve1: cannot place 1 of 1")
    # the guest that could not leave stays: step 2 is planned on what step 1 leaves
    assert not plan.steps[1].blocked and plan.steps[1].blocked_message() == ""
    assert [move.target for move in plan.steps[1].drains[0].moves] == ["pve3"]


def test_return_blocked_by_a_pin_is_skipped_with_its_reason() -> None:
    inv = four_nodes()
    options = replace(OPTIONS, pins={101: ("pve3",)})
    plan = rolling(inv, ("pve1", "pve2"), options=options)
    step = plan.steps[0]
    assert [move.target for move in step.drains[0].moves if move.vmid == 101] == ["pve3"]
    assert [(s.vmid, s.reason) for s in step.returns.skipped] == [
        (101, "a VMPlacement pins it to pve3, not pve1")
    ]
    assert final_nodes(inv, plan)[101] == "pve3"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"nodes": ()}, "no node to maintain"),
        ({"nodes": ("pve1", "pve1")}, "'pve1' is listed more than once"),
        ({"nodes": ("pve9",)}, "'pve9' is not in the cluster"),
        ({"nodes": ("pve1",), "at_once": 0}, "at least 1"),
    ],
)
def test_bad_requests_raise_plan_error(kw: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_rolling(four_nodes(), RollingRequest(**kw))  # type: ignore[arg-type]


def test_an_offline_node_in_the_list_fails_the_whole_plan() -> None:
    inv = four_nodes()
    down = Inventory(tuple(replace(n, online=n.name != "pve3") for n in inv.nodes), inv.vms)
    with pytest.raises(PlanError, match="'pve3' is offline"):
        rolling(down, ("pve1", "pve3"))


def test_steps_cut_the_node_list_in_order() -> None:
    assert rolling_steps(("a", "b", "c"), 2) == (("a", "b"), ("c",))


# --- return home on a live inventory ----------------------------------------------------------


def test_return_skips_with_reasons() -> None:
    guests = [
        vm(101, 4, "pve2"),  # still parked: goes home
        vm(102, 4, "pve3"),  # moved again
        vm(103, 4, "pve1"),  # already home
        vm(104, 30, "pve2"),  # no longer fits
        vm(105, 4, "pve2", tags=frozenset({"anti-affinity_db"})),
        vm(106, 4, "pve1", tags=frozenset({"anti-affinity_db"})),
    ]
    inv = cluster({"pve1": 32, "pve2": 64, "pve3": 64}, guests)
    departures = [Departure(vmid, "pve1", "pve2") for vmid in (101, 102, 103, 104, 105, 107)]
    plan = plan_return(inv, departures, OPTIONS)
    assert [(m.vmid, m.source, m.target) for m in plan.moves] == [(101, "pve2", "pve1")]
    assert {s.vmid: s.reason for s in plan.skipped} == {
        102: "moved again meanwhile: on pve3, the drain parked it on pve2",
        103: "already on pve1",
        104: "no longer fits: needs 30.0 GiB, pve1 has 24.0 GiB free",
        105: "pve1 holds anti-affinity group db (vm 106)",
        107: "no longer in the cluster",
    }


def test_return_books_largest_first_and_keeps_the_departure_order() -> None:
    guests = [vm(101, 2, "pve2"), vm(102, 8, "pve2"), vm(103, 2, "pve2")]
    inv = cluster({"pve1": 10, "pve2": 64}, guests)
    departures = [Departure(vmid, "pve1", "pve2") for vmid in (101, 102, 103)]
    plan = plan_return(inv, departures, OPTIONS)
    assert [m.vmid for m in plan.moves] == [101, 102]
    assert [s.vmid for s in plan.skipped] == [103]


def test_return_refuses_an_offline_or_cordoned_home() -> None:
    inv = cluster({"pve1": 32, "pve2": 64}, [vm(101, 4, "pve2")])
    cordoned = plan_return(
        inv, [Departure(101, "pve1", "pve2")], replace(OPTIONS, cordoned=frozenset({"pve1"}))
    )
    assert cordoned.skipped[0].reason == "home node pve1 is cordoned by a NodeDrain"
    offline = Inventory((node("pve1", 32, online=False), node("pve2", 64, 4)), inv.vms)
    skipped = plan_return(offline, [Departure(101, "pve1", "pve2")], OPTIONS).skipped
    assert skipped[0].reason == "home node pve1 is offline"


# --- properties -------------------------------------------------------------------------------


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Inventory, tuple[str, ...], int, dict[int, tuple[str, ...]]]:
    """3-6 nodes, guests placed only where they fit (used memory = the guests' memory)."""
    count = draw(st.integers(3, 6))
    sizes = {f"pve{i}": draw(st.sampled_from([16, 32, 48, 64])) for i in range(1, count + 1)}
    free = {name: size for name, size in sizes.items()}
    guests = []
    for vmid in range(100, 100 + draw(st.integers(0, 24))):
        memory = draw(st.sampled_from([1, 2, 4, 8, 12]))
        home = draw(st.sampled_from(sorted(sizes)))
        if free[home] >= memory:
            free[home] -= memory
            guests.append(vm(vmid, memory, home))
    order = tuple(draw(st.permutations(sorted(sizes)))[: draw(st.integers(1, count))])
    at_once = draw(st.integers(1, 2))
    pins = {
        guest.vmid: tuple(draw(st.lists(st.sampled_from(sorted(sizes)), min_size=1, max_size=2)))
        for guest in guests
        if draw(st.integers(0, 5)) == 0
    }
    return cluster(sizes, guests), order, at_once, pins


def _load(inv: Inventory, where: dict[int, str]) -> dict[str, int]:
    load = dict.fromkeys((n.name for n in inv.nodes), 0)
    for guest in inv.vms:
        load[where[guest.vmid]] += guest.max_memory
    return load


@settings(max_examples=100, deadline=None)
@given(clusters(), st.booleans())
def test_rolling_properties(
    scenario: tuple[Inventory, tuple[str, ...], int, dict[int, tuple[str, ...]]],
    return_guests: bool,
) -> None:
    inv, order, at_once, pins = scenario
    sizes = {n.name: n.max_memory for n in inv.nodes}
    options = replace(OPTIONS, pins=pins)
    plan = rolling(inv, order, at_once=at_once, return_guests=return_guests, options=options)

    # determinism, whatever order the inventory lists guests in
    shuffled = list(inv.vms)
    random.Random(len(shuffled)).shuffle(shuffled)
    again = rolling(
        Inventory(inv.nodes, tuple(shuffled)),
        order,
        at_once=at_once,
        return_guests=return_guests,
        options=options,
    )
    assert again == plan

    where = {guest.vmid: guest.node for guest in inv.vms}
    for index, step in enumerate(plan.steps):
        later = {name for other in plan.steps[index + 1 :] for name in other.nodes}
        for drain in step.drains:
            for move in drain.moves:
                assert where[move.vmid] == move.source == drain.node
                assert move.target not in step.nodes
                if move.vmid in pins:  # pins respected
                    assert move.target in pins[move.vmid]
                where[move.vmid] = move.target
        load = _load(inv, where)
        assert all(load[name] <= sizes[name] for name in sizes)  # capacity, after the drains
        # parked on a later node only when no other node had room for it (by the end of
        # the step's drains, free memory only shrank)
        for vmid in step.parked_on_later:
            guest = inv.vm(vmid)
            assert guest is not None and where[vmid] in later
            allowed = pins.get(vmid, tuple(sizes))
            room = [
                name
                for name in allowed
                if name not in later and name not in step.nodes
                if sizes[name] - load[name] >= guest.max_memory
            ]
            assert not room, f"vm {vmid} parked on {where[vmid]} while {room} had room"
        for move in step.returns.moves:
            assert where[move.vmid] == move.source
            assert move.target in step.nodes
            if move.vmid in pins:
                assert move.target in pins[move.vmid]
            where[move.vmid] = move.target
        load = _load(inv, where)
        assert all(load[name] <= sizes[name] for name in sizes)  # capacity, after the returns
        for skipped in step.returns.skipped:  # a pin is the only reason a return is skipped
            assert skipped.vmid in pins and "VMPlacement" in skipped.reason
        if not return_guests:
            assert not step.returns.moves and not step.returns.skipped

    if return_guests and plan.first_blocked is None:
        # every guest home, except those a pin keeps away from it
        for guest in inv.vms:
            if guest.node not in pins.get(guest.vmid, (guest.node,)):
                continue
            assert where[guest.vmid] == guest.node, f"vm {guest.vmid} not back home"
