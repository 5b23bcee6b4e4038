"""Drain planner: worked examples, then properties over random inventories."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.planning import (
    DrainPlan,
    DrainRequest,
    MemoryReserve,
    PlanError,
    UnplaceableCause,
    VMSelector,
    plan_drain,
)
from proxmigrate.planning.selection import anti_affinity_groups

GIB = 1024**3
NO_RESERVE = MemoryReserve(min_bytes=0, ratio=0.0)


def node(name: str, max_gib: float, used_gib: float = 0, **kw: object) -> NodeInfo:
    return NodeInfo(
        name=name,
        online=bool(kw.get("online", True)),
        max_memory=int(max_gib * GIB),
        used_memory=int(used_gib * GIB),
        max_cpu=int(kw.get("max_cpu", 16)),  # type: ignore[call-overload]
        cpu_load=float(kw.get("cpu_load", 0.0)),  # type: ignore[arg-type]
    )


def vm(vmid: int, mem_gib: float, on: str = "pve1", **kw: object) -> VMInfo:
    return VMInfo(
        vmid=vmid,
        name=f"vm{vmid}",
        node=on,
        running=bool(kw.pop("running", True)),
        max_memory=int(mem_gib * GIB),
        used_memory=int(mem_gib * GIB),
        **kw,  # type: ignore[arg-type]
    )


def drain(inv: Inventory, **kw: object) -> DrainPlan:
    kw.setdefault("reserve", NO_RESERVE)
    return plan_drain(inv, DrainRequest(node="pve1", **kw))  # type: ignore[arg-type]


def targets_of(plan: DrainPlan) -> dict[int, str]:
    return {move.vmid: move.target for move in plan.moves}


# --- examples -------------------------------------------------------------------------------


def test_everything_moves_off_the_node_and_starts_on_distinct_targets() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64), node("pve3", 64)),
        vms=tuple(vm(100 + i, size) for i, size in enumerate([8, 4, 2, 16, 1, 4])),
    )
    plan = drain(inv)
    assert plan.complete and not plan.skipped
    assert sorted(targets_of(plan)) == [100, 101, 102, 103, 104, 105]
    assert set(targets_of(plan).values()) == {"pve2", "pve3"}
    assert [m.order for m in plan.moves] == list(range(6))
    assert plan.moves[0].vmid == 103  # largest first
    assert plan.moves[0].target != plan.moves[1].target  # interleaved across targets


def test_each_target_alternates_largest_and_smallest_guests() -> None:
    sizes = [1, 2, 3, 4, 5, 6]
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64)),
        vms=tuple(vm(100 + i, size) for i, size in enumerate(sizes)),
    )
    plan = drain(inv)
    memory = [move.memory_bytes // GIB for move in plan.moves]
    assert memory == [6, 1, 5, 2, 4, 3]


def test_bytes_to_receive_are_balanced_across_equal_targets() -> None:
    sizes = [12, 10, 8, 8, 6, 4, 4, 2, 2, 1]
    inv = Inventory(
        nodes=(node("pve1", 256), node("pve2", 256), node("pve3", 256), node("pve4", 256)),
        vms=tuple(vm(100 + i, size) for i, size in enumerate(sizes)),
    )
    per_target = drain(inv).transfer_bytes_by_target()
    assert max(per_target.values()) - min(per_target.values()) <= max(sizes) * GIB


def test_memory_shortfall_names_the_roomiest_target_and_the_missing_amount() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 32, used_gib=25.8), node("pve3", 32, used_gib=28)),
        vms=(vm(101, 16), vm(102, 2)),
    )
    plan = drain(inv)
    assert targets_of(plan) == {102: "pve2"}
    (blocked,) = plan.unplaceable
    assert blocked.cause is UnplaceableCause.MEMORY
    # Largest first: vm 101 is judged while pve2 still has its 6.2 GiB.
    assert blocked.reason == "needs 16.0 GiB, largest free target pve2 has 6.2 GiB"
    # Then vm 102 took 2 GiB of pve2, so 16 - 4.2 GiB is missing on the roomiest target.
    assert plan.missing_memory_bytes == 16 * GIB - (int(32 * GIB) - int(25.8 * GIB) - 2 * GIB)
    assert not plan.complete
    assert "11.8 GiB of memory missing" in plan.blocked_message()


def test_default_reserve_is_ten_percent_or_two_gib_whichever_is_larger() -> None:
    reserve = MemoryReserve()
    assert reserve.for_node(node("big", 64)) == int(6.4 * GIB)
    assert reserve.for_node(node("small", 8)) == 2 * GIB
    inv = Inventory(nodes=(node("pve1", 64), node("pve2", 64, used_gib=49)), vms=(vm(101, 9),))
    assert not plan_drain(inv, DrainRequest(node="pve1")).complete  # 64 - 49 - 6.4 = 8.6 GiB
    assert drain(inv).complete


def test_a_stopped_vm_still_reserves_its_memory_on_the_target() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 8)),
        vms=(vm(101, 6, running=False), vm(102, 6, running=False)),
    )
    plan = drain(inv)
    assert len(plan.moves) == 1 and len(plan.unplaceable) == 1
    assert plan.moves[0].online is False and plan.moves[0].transfer_bytes == 0


def test_anti_affinity_counts_guests_already_on_targets() -> None:
    tag = frozenset({"anti-affinity_db"})
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64), node("pve3", 64, used_gib=40)),
        vms=(vm(101, 4, tags=tag), vm(201, 4, on="pve2", tags=tag)),
    )
    assert targets_of(drain(inv)) == {101: "pve3"}


def test_anti_affinity_group_larger_than_targets_leaves_one_unplaceable() -> None:
    tag = frozenset({"Anti-Affinity_DB"})  # PVE compares tags case-insensitively
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64)),
        vms=(vm(101, 4, tags=tag), vm(102, 4, tags=frozenset({"anti-affinity_db"}))),
    )
    plan = drain(inv)
    assert len(plan.moves) == 1
    (blocked,) = plan.unplaceable
    assert blocked.cause is UnplaceableCause.ANTI_AFFINITY
    assert "pve2 holds anti-affinity group db" in blocked.reason
    assert plan.missing_memory_bytes == 0


def test_policies_skip_or_refuse_with_reasons() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64)),
        vms=(
            vm(101, 1, running=False),
            vm(102, 1, running=False, template=True),
            vm(103, 1, local_disks=("local-lvm:vm-103-disk-0",)),
            vm(104, 1, local_devices=("hostpci0",)),
        ),
    )
    plan = drain(inv, stopped_vms="leave", templates="leave", local_disks="skip")
    assert {s.vmid: s.reason for s in plan.skipped} == {
        101: "stopped (stoppedVMs: leave)",
        102: "template (templates: leave)",
        103: "has local disks (local-lvm:vm-103-disk-0) (localDisks: skip)",
    }
    assert [(u.vmid, u.cause) for u in plan.unplaceable] == [(104, UnplaceableCause.LOCAL_DEVICES)]
    assert "hostpci0" in plan.unplaceable[0].reason

    failing = drain(inv, local_disks="fail")
    assert {u.vmid: u.cause for u in failing.unplaceable} == {
        103: UnplaceableCause.LOCAL_DISKS,
        104: UnplaceableCause.LOCAL_DEVICES,
    }
    default = drain(inv)  # localDisks defaults to skip, as the CRD and docs/api.md say
    assert {u.vmid for u in default.unplaceable} == {104}
    assert "localDisks: skip" in {s.vmid: s.reason for s in default.skipped}[103]
    moved = drain(inv, local_disks="migrate")
    assert {m.vmid: m.with_local_disks for m in moved.moves} == {
        101: False,
        102: False,
        103: True,
    }


def test_selector_leaves_unselected_guests_with_a_reason() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64)),
        vms=(
            vm(101, 1, tags=frozenset({"web"})),
            vm(102, 1, tags=frozenset({"web", "keep"})),
            vm(103, 1, pool="prod"),
            vm(104, 1),
        ),
    )
    selector = VMSelector(
        tags=frozenset({"web"}), pools=frozenset({"prod"}), exclude_tags=frozenset({"keep"})
    )
    plan = drain(inv, selector=selector)
    assert sorted(targets_of(plan)) == [101, 103]
    assert {s.vmid: s.reason for s in plan.skipped} == {
        102: "excluded by vmSelector (tag keep)",
        104: "not matched by vmSelector",
    }


def test_pins_pick_the_first_allowed_node_that_fits() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64), node("pve3", 16), node("pve4", 64)),
        vms=(vm(101, 20), vm(102, 2)),
    )
    plan = drain(inv, pins={101: ("pve3", "pve4"), 102: ("pve3",)})
    assert targets_of(plan) == {101: "pve4", 102: "pve3"}


def test_pin_to_unusable_nodes_is_explained() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64), node("pve3", 64, online=False)),
        vms=(vm(101, 2),),
    )
    plan = drain(inv, pins={101: ("pve1", "pve3")})
    (blocked,) = plan.unplaceable
    assert blocked.cause is UnplaceableCause.PIN
    assert blocked.reason == (
        "pinned by VMPlacement, no allowed node usable: pve1 is being drained, pve3 offline"
    )


def test_default_targets_skip_offline_and_cordoned_nodes() -> None:
    inv = Inventory(
        nodes=(
            node("pve1", 64),
            node("pve2", 64, online=False),
            node("pve3", 64),
            node("pve4", 64),
        ),
        vms=(vm(101, 1), vm(102, 1)),
    )
    plan = drain(inv, cordoned=frozenset({"pve1", "pve4"}))
    assert plan.targets == ("pve3",)
    assert plan.excluded_targets == (("pve2", "offline"), ("pve4", "cordoned by a NodeDrain"))
    assert set(targets_of(plan).values()) == {"pve3"}


def test_no_target_at_all_blocks_every_guest() -> None:
    inv = Inventory(nodes=(node("pve1", 64), node("pve2", 64)), vms=(vm(101, 1),))
    plan = drain(inv, cordoned=frozenset({"pve2"}))
    assert [u.reason for u in plan.unplaceable] == [
        "no eligible target: pve2 cordoned by a NodeDrain"
    ]


def test_cpu_breaks_ties_between_equal_memory_targets() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64, cpu_load=0.9), node("pve3", 64, cpu_load=0.1)),
        vms=(vm(101, 4),),
    )
    assert targets_of(drain(inv)) == {101: "pve3"}


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        ({"node": "pve9"}, "node 'pve9' is not in the cluster (nodes: pve1, pve2, pve3)"),
        ({"node": "pve3"}, "node 'pve3' is offline"),
        ({"node": "pve1", "targets": ("pve2", "pve7")}, "node 'pve7' is not in the cluster"),
        ({"node": "pve1", "targets": ("pve1",)}, "targets include 'pve1'"),
    ],
)
def test_bad_requests_raise_plan_error(request_kw: dict[str, object], message: str) -> None:
    inv = Inventory(nodes=(node("pve1", 8), node("pve2", 8), node("pve3", 8, online=False)), vms=())
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_drain(inv, DrainRequest(**request_kw))  # type: ignore[arg-type]


def test_explicit_offline_target_is_reported_not_raised() -> None:
    inv = Inventory(
        nodes=(node("pve1", 64), node("pve2", 64), node("pve3", 64, online=False)),
        vms=(vm(101, 1),),
    )
    plan = drain(inv, targets=("pve3", "pve2"))
    assert plan.excluded_targets == (("pve3", "offline"),)
    assert targets_of(plan) == {101: "pve2"}


def test_bad_reserve_is_rejected() -> None:
    with pytest.raises(PlanError, match="ratio"):
        MemoryReserve(ratio=1.5)


# --- properties -----------------------------------------------------------------------------

GROUP_TAGS = ("anti-affinity_a", "anti-affinity_b", "web")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Inventory, DrainRequest]:
    node_count = draw(st.integers(2, 5))
    nodes = []
    for index in range(1, node_count + 1):
        max_gib = draw(st.sampled_from([8, 16, 32, 64]))
        nodes.append(
            node(
                f"pve{index}",
                max_gib,
                used_gib=draw(st.integers(0, max_gib // 2) | st.integers(0, max_gib)),
                online=index == 1 or draw(st.integers(0, 4)) > 0,
                max_cpu=draw(st.sampled_from([4, 16])),
                cpu_load=draw(st.floats(0, 1)),
            )
        )
    names = [n.name for n in nodes]
    vms = []
    for vmid in range(100, 100 + draw(st.integers(0, 24))):
        running = draw(st.booleans())
        vms.append(
            vm(
                vmid,
                draw(st.sampled_from([0.5, 1, 2, 4, 8, 16])),
                on=draw(st.sampled_from(names[:1] * len(names) + names)),
                running=running,
                template=not running and draw(st.booleans()),
                tags=frozenset(draw(st.sets(st.sampled_from(GROUP_TAGS), max_size=2))),
                pool=draw(st.sampled_from([None, "prod"])),
                local_disks=draw(st.sampled_from([(), (), (), ("local:1",)])),
                local_devices=draw(st.sampled_from([()] * 9 + [("usb0",)])),
            )
        )
    drained = [v.vmid for v in vms if v.node == "pve1"]
    pin_list = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True).map(tuple)
    pins = draw(st.dictionaries(st.sampled_from(drained), pin_list, max_size=3)) if drained else {}
    request = DrainRequest(
        node="pve1",
        targets=draw(
            st.one_of(
                st.none(), st.none(), st.sets(st.sampled_from(names[1:]), min_size=1).map(tuple)
            )
        ),
        cordoned=frozenset(draw(st.sets(st.sampled_from(names), max_size=1))),
        selector=draw(
            st.sampled_from(
                [
                    VMSelector(),
                    VMSelector(pools=frozenset({"prod"})),
                    VMSelector(exclude_tags=frozenset({"web"})),
                ]
            )
        ),
        stopped_vms=draw(st.sampled_from(["migrate", "leave"])),
        templates=draw(st.sampled_from(["migrate", "leave"])),
        local_disks=draw(st.sampled_from(["migrate", "skip", "fail"])),
        reserve=draw(st.sampled_from([MemoryReserve(), NO_RESERVE])),
        pins=pins,
    )
    return Inventory(nodes=tuple(nodes), vms=tuple(vms)), request


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_plan_properties(scenario: tuple[Inventory, DrainRequest]) -> None:
    inv, request = scenario
    plan = plan_drain(inv, request)

    # Every guest on the node is accounted for exactly once, with a reason where not moved.
    on_node = sorted(v.vmid for v in inv.vms_on("pve1"))
    accounted = [m.vmid for m in plan.moves] + [s.vmid for s in plan.skipped]
    accounted += [u.vmid for u in plan.unplaceable]
    assert sorted(accounted) == on_node
    assert all(s.reason for s in plan.skipped) and all(u.reason for u in plan.unplaceable)
    assert [m.order for m in plan.moves] == list(range(len(plan.moves)))

    for move in plan.moves:
        target = inv.node(move.target)
        assert target is not None and target.online
        assert move.target != "pve1" and move.target not in request.cordoned
        if request.targets is not None:
            assert move.target in request.targets
        if move.vmid in request.pins:
            assert move.target in request.pins[move.vmid]

    for target in plan.targets:
        info = inv.node(target)
        assert info is not None
        usable = max(0, info.max_memory - info.used_memory - request.reserve.for_node(info))
        assert sum(m.memory_bytes for m in plan.moves if m.target == target) <= usable

        incoming = [inv.vm(m.vmid) for m in plan.moves if m.target == target]
        for guest in incoming:
            assert guest is not None
            others = [v for v in inv.vms_on(target) + incoming if v and v.vmid != guest.vmid]
            for other in others:
                assert not (
                    anti_affinity_groups(guest, request.anti_affinity_prefix)
                    & anti_affinity_groups(other, request.anti_affinity_prefix)
                )

    memory_blocked = any(u.cause is UnplaceableCause.MEMORY for u in plan.unplaceable)
    assert (plan.missing_memory_bytes > 0) == memory_blocked
    assert plan.complete == (not plan.unplaceable)

    # Deterministic, and independent of the order the adapter listed things in.
    assert plan_drain(inv, request) == plan
    shuffled = list(inv.vms)
    random.Random(len(shuffled)).shuffle(shuffled)
    reordered = Inventory(nodes=tuple(reversed(inv.nodes)), vms=tuple(shuffled))
    assert plan_drain(reordered, request) == plan
