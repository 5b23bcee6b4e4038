"""One plan per cluster: a drain counts every move in flight (other drains', placements')
on its targets' memory and as bytes headed there."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.controllers.context import ClusterContext
from proxmigrate.controllers.drain_requests import (
    drain_request,
    moves_elsewhere,
    with_earlier_plans,
)
from proxmigrate.engine import EnginePolicy, Job, MigrationEngine
from proxmigrate.inventory import Inventory
from proxmigrate.planning import DrainRequest, MemoryReserve, plan_drain, plan_drains
from proxmigrate.planning.returns import Departure, plan_return
from tests.unit.test_planning_drain import GIB, NO_RESERVE, drain, node, targets_of, vm


def two_sources() -> Inventory:
    """pve1 and pve2 each hold four 8 GiB guests; t1 is roomy, t2 and t3 are not."""
    nodes = (node("pve1", 64), node("pve2", 64), node("t1", 512), node("t2", 128), node("t3", 128))
    guests = [vm(100 + i, 8) for i in range(4)] + [vm(200 + i, 8, on="pve2") for i in range(4)]
    return Inventory(nodes, tuple(guests))


def request(source: str, **kw: Any) -> DrainRequest:
    return DrainRequest(node=source, cordoned=frozenset({"pve1", "pve2"}), reserve=NO_RESERVE, **kw)


def landing(*plans: Any) -> Counter[str]:
    return Counter(move.target for plan in plans for move in plan.moves)


def test_drains_planned_apart_share_the_roomy_target_planned_together_spread() -> None:
    inventory = two_sources()
    apart = landing(*(plan_drain(inventory, request(n)) for n in ("pve1", "pve2")))
    together = landing(*plan_drains(inventory, [request("pve1"), request("pve2")]))
    assert apart["t1"] == 4  # each drain alone sends half its guests to t1
    assert together["t1"] < apart["t1"]
    assert max(together.values()) - min(together.values()) <= 1


def test_drains_planned_together_share_the_slow_links_by_their_speed() -> None:
    """Two 25 Gbit/s sources into fast (10 Gbit/s), slow1 and fuller slow2 (5 Gbit/s): the
    second drain's link budgets count the first's bytes in flight, so together the targets
    end by the floor plus one small guest (47 / 24 / 23 GiB: 4.7 / 4.8 / 4.6 GiB per Gbit/s
    against a floor of 4.7); memory's pull left slow2 at 7 GiB and put 30 on slow1 (6.0)."""
    links = {"pve1": 25.0, "pve2": 25.0, "fast": 10.0, "slow1": 5.0, "slow2": 5.0}
    sizes = [16, 8, 8, 4, 4, 2, 2, 1, 1, 1]
    inventory = Inventory(
        (
            node("pve1", 1024),
            node("pve2", 1024),
            node("fast", 1024, max_cpu=10**6),
            node("slow1", 1024, max_cpu=10**6),
            node("slow2", 512, used_gib=256, max_cpu=10**6),
        ),
        tuple(vm(100 + i, size) for i, size in enumerate(sizes))
        + tuple(vm(200 + i, size, on="pve2") for i, size in enumerate(sizes)),
    )
    plans = plan_drains(inventory, [request(n, link_gbps=links) for n in ("pve1", "pve2")])
    received: Counter[str] = Counter()
    for plan in plans:
        for name, sent in plan.transfer_bytes_by_target().items():
            received[name] += sent
    floor = 2 * sum(sizes) / 20  # both drains' GiB over the targets' 20 Gbit/s
    ends = {name: received[name] / GIB / links[name] for name in ("fast", "slow1", "slow2")}
    assert max(ends.values()) <= floor + 1 / 5  # one 1 GiB guest over a 5 Gbit/s link


def test_moves_in_flight_steer_the_placement_by_their_bytes() -> None:
    inventory = Inventory(
        (node("pve1", 512), node("pve2", 512), node("t1", 512), node("t2", 512)),
        tuple([vm(100 + i, 8) for i in range(6)] + [vm(200 + i, 8, on="pve2") for i in range(6)]),
    )
    alone = targets_of(drain(inventory, cordoned=frozenset({"pve2"})))
    assert Counter(alone.values())["t1"] == 3  # equal targets share the guests evenly
    in_flight = {200 + i: "t1" for i in range(6)}  # 48 GiB already headed to t1
    shared = targets_of(drain(inventory, in_flight=in_flight, cordoned=frozenset({"pve2"})))
    assert Counter(shared.values())["t2"] >= 5
    assert len(shared) == 6  # memory alone still decides what fits


def test_moves_onto_cordoned_nodes_and_guests_already_there_do_not_count() -> None:
    inventory = Inventory(
        (node("pve1", 64), node("pve2", 64), node("t1", 64), node("t2", 64)),
        (vm(100, 8), vm(101, 8), vm(200, 40, on="pve2"), vm(201, 40, on="t1")),
    )
    alone = targets_of(drain(inventory, cordoned=frozenset({"pve2"})))
    ignored = {200: "pve2", 201: "t1", 999: "t2"}  # onto a cordoned node, arrived, unknown
    assert targets_of(drain(inventory, cordoned=frozenset({"pve2"}), in_flight=ignored)) == alone


def test_a_guest_in_flight_off_the_drained_node_is_not_planned_again() -> None:
    inventory = Inventory(
        (node("pve1", 64), node("t1", 64), node("t2", 64)), (vm(100, 8), vm(101, 8))
    )
    plan = drain(inventory, in_flight={100: "t2"})
    assert [move.vmid for move in plan.moves] == [101]


def test_a_return_home_counts_the_moves_in_flight_onto_home() -> None:
    """pve1's maintenance is over: its 16 GiB guest parked on t1 goes home unless another
    drain's 40 GiB guest is already on its way there (pve1 has 48 GiB)."""
    inventory = Inventory(
        (node("pve1", 48), node("pve2", 64), node("t1", 64)),
        (vm(100, 16, on="t1"), vm(200, 40, on="pve2")),
    )
    home = [Departure(100, "pve1", "t1")]
    options = DrainRequest(node="", reserve=NO_RESERVE)
    assert [move.vmid for move in plan_return(inventory, home, options).moves] == [100]
    busy = replace(options, in_flight={200: "pve1", 100: "pve1"})  # 100: its own return, queued
    plan = plan_return(inventory, home, busy)
    assert plan.moves == () and "no longer fits" in plan.skipped[0].reason


# --- the NodeDrain controller's request: what is in flight cluster-wide ---------------------


def context(inventory: Inventory, engine: MigrationEngine) -> ClusterContext:
    cluster = ProxmoxClusterSpec.from_spec(
        {"endpoints": ["pve1"], "credentialsSecretRef": {"name": "s"}}
    )
    return ClusterContext(SimpleNamespace(engine=engine), cluster, inventory)  # type: ignore[arg-type]


def nodedrain(source: str, entries: list[dict[str, Any]], cluster: str = "lab") -> dict[str, Any]:
    spec = {"clusterRef": {"name": cluster}, "nodeName": source}
    return {"metadata": {"name": f"drain-{source}"}, "spec": spec, "status": {"vms": entries}}


def spec_of(source: str) -> NodeDrainSpec:
    return NodeDrainSpec.from_spec(nodedrain(source, [])["spec"])


def first_plan(inventory: Inventory, drains: list[dict[str, Any]], engine: MigrationEngine) -> Any:
    """The first plan of pve2's NodeDrain, as the controller builds its request."""
    plan_request = drain_request(spec_of("pve2"), context(inventory, engine), drains)
    return plan_drain(inventory, plan_request)


def test_a_placement_move_queued_in_the_runtime_steers_a_new_drain() -> None:
    inventory = Inventory(
        (node("pve2", 512), node("t1", 512), node("t2", 512)),
        tuple(
            [vm(100 + i, 8, on="t2") for i in range(6)]
            + [vm(200 + i, 8, on="pve2") for i in range(6)]
        ),
    )
    engine = MigrationEngine(EnginePolicy())
    assert Counter(move.target for move in first_plan(inventory, [], engine).moves)["t1"] == 3
    for i in range(6):  # a VMPlacement moves t2's guests to t1
        engine.submit(Job(f"ns/place-{i}", 100 + i, "t2", "t1", memory_bytes=8 * GIB), 0.0)
    targets = Counter(move.target for move in first_plan(inventory, [], engine).moves)
    assert targets["t2"] >= 5


def created_together(source: str, second: int) -> dict[str, Any]:
    body = nodedrain(source, [])
    body["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:0{second}Z"
    del body["status"]
    return body


def test_drains_created_together_plan_as_one() -> None:
    """Both NodeDrains of one apply plan at the same moment, neither has written its moves:
    the later one plans the earlier one's first and counts its moves."""
    inventory = two_sources()
    drains = [created_together("pve1", 1), created_together("pve2", 1)]
    ctx = context(inventory, MigrationEngine(EnginePolicy()))

    def first(index: int) -> Any:
        spec = NodeDrainSpec.from_spec(drains[index]["spec"])
        request = drain_request(spec, ctx, drains)
        return plan_drain(inventory, with_earlier_plans(request, spec, drains[index], ctx, drains))

    apart = landing(
        *(plan_drain(inventory, drain_request(spec_of(n), ctx, drains)) for n in ("pve1", "pve2"))
    )
    together = landing(first(0), first(1))
    assert apart["t1"] == 4 and together["t1"] < 4
    assert max(together.values()) - min(together.values()) <= 1
    drains[0]["status"] = {"startTime": "2026-01-01T00:00:02Z"}  # started: its entries count
    spec = NodeDrainSpec.from_spec(drains[1]["spec"])
    assert (
        with_earlier_plans(drain_request(spec, ctx, drains), spec, drains[1], ctx, drains).in_flight
        == {}
    )


def test_another_drains_moves_are_never_counted_as_free_memory() -> None:
    """pve1's drain sends 48 GiB to t1, the only roomy target; pve2's 32 GiB guest then
    fits nowhere: Blocked for memory, not a t1 overcommitted by 16 GiB."""
    inventory = Inventory(
        (node("pve1", 128), node("pve2", 128), node("t1", 80), node("t2", 32)),
        tuple([vm(100 + i, 8) for i in range(6)] + [vm(200, 32, on="pve2")]),
    )
    entries = [
        {"vmid": 100 + i, "to": "t1", "phase": "Queued" if i < 2 else "Pending"} for i in range(6)
    ]
    drains = [nodedrain("pve1", entries), nodedrain("pve2", [])]
    plan = first_plan(inventory, drains, MigrationEngine(EnginePolicy()))
    assert plan.moves == () and [vm.vmid for vm in plan.unplaceable] == [200]


def test_other_drains_entries_not_yet_final_are_moves_elsewhere() -> None:
    def entry(vmid: int, to: str, phase: str) -> dict[str, object]:
        return {"vmid": vmid, "to": to, "phase": phase, "memoryBytes": GIB}

    drains = [
        nodedrain("pve1", [entry(1, "t1", "Pending")]),  # this drain itself
        nodedrain("pve2", [entry(2, "t1", "Pending"), entry(3, "t1", "Migrating")]),
        nodedrain("pve3", [entry(4, "t2", "Migrated"), entry(5, "t2", "Queued")]),
        nodedrain("pve4", [entry(6, "t2", "Pending")], cluster="other"),
    ]
    assert moves_elsewhere(spec_of("pve1"), drains) == {2: "t1", 3: "t1", 5: "t2"}


# --- properties -----------------------------------------------------------------------------

SOURCES = ("s1", "s2", "s3")
TARGETS = ("t1", "t2", "t3")


@st.composite
def clusters(draw: st.DrawFn) -> Inventory:
    nodes = [node(name, 64) for name in SOURCES]
    nodes += [node(name, draw(st.integers(16, 160)), draw(st.integers(0, 12))) for name in TARGETS]
    guests = []
    for index, source in enumerate(SOURCES):
        sizes = draw(st.lists(st.integers(1, 24), max_size=6))
        guests += [vm(100 * (index + 1) + i, size, on=source) for i, size in enumerate(sizes)]
    return Inventory(tuple(nodes), tuple(guests))


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(0, 4))
def test_memory_is_never_overcommitted_across_drains(inventory: Inventory, gib: int) -> None:
    reserve = MemoryReserve(gib * GIB, 0.0)
    requests = [
        DrainRequest(node=source, cordoned=frozenset(SOURCES), reserve=reserve)
        for source in SOURCES
    ]
    plans = plan_drains(inventory, requests)
    placed: Counter[str] = Counter()
    for plan in plans:
        for move in plan.moves:
            placed[move.target] += move.memory_bytes
    for name in TARGETS:
        target = inventory.node(name)
        assert target is not None
        usable = target.max_memory - target.used_memory - reserve.for_node(target)
        assert placed[name] <= max(0, usable)
    moved = [move.vmid for plan in plans for move in plan.moves]
    assert len(moved) == len(set(moved))
