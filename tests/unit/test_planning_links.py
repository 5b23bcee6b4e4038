"""A link-aware plan: each target's fair share of a drain's bytes follows its declared link
(`DrainRequest.link_gbps`, ProxmoxCluster `nodeLinks`); undeclared, every share is even."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.controllers.context import ClusterContext
from proxmigrate.controllers.drain_requests import drain_request
from proxmigrate.engine import EnginePolicy, MigrationEngine
from proxmigrate.inventory import Inventory
from proxmigrate.planning import DrainPlan, DrainRequest, plan_drain
from proxmigrate.planning.links import ingress_weights
from tests.unit.test_planning_drain import NO_RESERVE, node, vm

BIG_CPU = 10**6  # CPU never separates targets here


def fast_into_slow(guests: int = 12, size: float = 8) -> Inventory:
    """pve1 (25 Gbit/s in the tests) holds `guests` equal guests; fast (10 Gbit/s) and
    slow1, slow2 (5 Gbit/s) have the same, ample memory."""
    nodes = tuple(node(n, 4096, max_cpu=BIG_CPU) for n in ("pve1", "fast", "slow1", "slow2"))
    return Inventory(nodes, tuple(vm(100 + i, size) for i in range(guests)))


LINKS = {"pve1": 25.0, "fast": 10.0, "slow1": 5.0, "slow2": 5.0}


def plan(inventory: Inventory, **kw: Any) -> DrainPlan:
    return plan_drain(inventory, DrainRequest(node="pve1", reserve=NO_RESERVE, **kw))


def seconds(plan: DrainPlan, links: dict[str, float]) -> float:
    """The plan's time at the targets' ingress: the slowest target's bytes over its link."""
    by_target = plan.transfer_bytes_by_target()
    return max(sent * 8 / (links[name] * 1e9) for name, sent in by_target.items())


def test_a_fast_target_takes_the_share_its_link_carries() -> None:
    inventory = fast_into_slow()
    even = plan(inventory)
    weighted = plan(inventory, link_gbps=LINKS)
    assert Counter(m.target for m in even.moves) == {"fast": 4, "slow1": 4, "slow2": 4}
    assert Counter(m.target for m in weighted.moves) == {"fast": 6, "slow1": 3, "slow2": 3}
    assert seconds(weighted, LINKS) < seconds(even, LINKS) * 0.8  # 41 s instead of 55


def test_the_order_interleaves_targets_by_their_link_time() -> None:
    """Drawn by bytes scheduled over link weight: fast is drawn twice as often as each slow."""
    moves = plan(fast_into_slow(), link_gbps=LINKS).moves
    first = Counter(move.target for move in moves[:8])
    assert first == {"fast": 4, "slow1": 2, "slow2": 2}


def test_weights_are_declared_links_capped_by_the_source_and_average_when_unlisted() -> None:
    assert ingress_weights("pve1", ("a", "b"), {}) == {"a": 1.0, "b": 1.0}
    assert ingress_weights("pve1", ("a", "b", "c"), {"pve1": 10, "a": 25, "b": 5}) == {
        "a": 10.0,  # no stream runs faster than the source's 10 Gbit/s
        "b": 5.0,
        "c": 7.5,  # unlisted: an average listed target
    }


def test_the_controller_passes_the_clusters_declared_links() -> None:
    cluster = ProxmoxClusterSpec.from_spec(
        {
            "endpoints": ["pve1"],
            "credentialsSecretRef": {"name": "s"},
            "migrationPolicy": {"nodeLinks": [{"node": "fast", "gbps": 10}]},
        }
    )
    engine = MigrationEngine(EnginePolicy())
    context = ClusterContext(SimpleNamespace(engine=engine), cluster, fast_into_slow())  # type: ignore[arg-type]
    spec = NodeDrainSpec.from_spec({"clusterRef": {"name": "lab"}, "nodeName": "pve1"})
    assert drain_request(spec, context, []).link_gbps == {"fast": 10.0}


# --- properties ------------------------------------------------------------------------------

GBPS = st.sampled_from([1.0, 5.0, 10.0, 25.0, 100.0])


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 4, 8, 16]), min_size=1, max_size=24),
    speed=GBPS,
)
def test_equal_declared_links_plan_as_none_declared(sizes: list[int], speed: float) -> None:
    inventory = Inventory(
        (node("pve1", 512), node("t1", 256), node("t2", 128, used_gib=32), node("t3", 512)),
        tuple(vm(100 + i, size) for i, size in enumerate(sizes)),
    )
    links = {name: speed for name in ("pve1", "t1", "t2", "t3")}
    assert plan(inventory, link_gbps=links) == plan(inventory)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=40),
    size=st.sampled_from([1, 4, 8]),
    targets=st.lists(GBPS, min_size=2, max_size=5),
)
def test_equal_guests_no_single_move_elsewhere_ends_the_drain_sooner(
    count: int, size: int, targets: list[float]
) -> None:
    """With memory and CPU to spare, the plan's time at the targets' links (the slowest
    target's bytes over its link) cannot be cut by moving any one guest to another target
    (even shares on unequal links can: the slow link ends last)."""
    names = [f"t{i}" for i in range(len(targets))]
    inventory = Inventory(
        (node("pve1", 4096, max_cpu=BIG_CPU), *(node(n, 1 << 20, max_cpu=BIG_CPU) for n in names)),
        tuple(vm(100 + i, size) for i in range(count)),
    )
    links = dict(zip(names, targets, strict=True))
    drained = plan(inventory, link_gbps=links)
    assert drained.complete
    guests = Counter(move.target for move in drained.moves)

    def ends(placed: Counter[str]) -> float:
        return max(placed[name] * size / links[name] for name in names)

    for source in (name for name in names if guests[name]):
        for target in (name for name in names if name != source):
            moved = guests.copy()
            moved[source] -= 1
            moved[target] += 1
            assert ends(moved) >= ends(guests) - 1e-9


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([2, 8, 16, 32]), min_size=1, max_size=20),
    speeds=st.tuples(GBPS, GBPS, GBPS),
)
def test_links_never_overcommit_memory(sizes: list[int], speeds: tuple[float, ...]) -> None:
    names = ("t1", "t2", "t3")
    inventory = Inventory(
        (node("pve1", 1024), node("t1", 96), node("t2", 64, used_gib=16), node("t3", 48)),
        tuple(vm(100 + i, size) for i, size in enumerate(sizes)),
    )
    drained = plan(inventory, link_gbps=dict(zip(names, speeds, strict=True)))
    taken = Counter[str]()
    for move in drained.moves:
        taken[move.target] += move.memory_bytes
    for target in names:
        info = inventory.node(target)
        assert info is not None
        assert taken[target] <= info.max_memory - info.used_memory
