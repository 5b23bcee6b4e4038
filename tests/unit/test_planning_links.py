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
from proxmigrate.planning.links import ingress_weights, link_budgets
from tests.unit.test_planning_drain import GIB, NO_RESERVE, node, vm

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


def fuller_slow_target() -> Inventory:
    """drain-25g-into-5g in small: a mix of sizes into fast (10 Gbit/s) and slow1, slow2
    (5 Gbit/s), slow2 with half the memory and half of that in use."""
    sizes = [24, 16, 16, 8] + [4] * 6 + [2] * 8 + [1] * 10
    nodes = (
        node("pve1", 4096, max_cpu=BIG_CPU),
        node("fast", 1024, max_cpu=BIG_CPU),
        node("slow1", 1024, max_cpu=BIG_CPU),
        node("slow2", 512, used_gib=256, max_cpu=BIG_CPU),
    )
    return Inventory(nodes, tuple(vm(100 + i, size) for i, size in enumerate(sizes)))


def test_a_fuller_slow_target_still_takes_its_links_share() -> None:
    """Memory's pull towards the roomier nodes kept slow2 at 9 GiB and put 36 GiB on slow1:
    62 s at slow1's link where 49 s carry the 114 GiB at the targets' 20 Gbit/s. The link
    budgets hold each target to its link's share, with room to spare on slow2."""
    drained = plan(fuller_slow_target(), link_gbps=LINKS)
    gib = {name: sent / GIB for name, sent in drained.transfer_bytes_by_target().items()}
    assert gib == {"fast": 57, "slow1": 29, "slow2": 28}
    assert seconds(drained, LINKS) < 114 * GIB * 8 / 20e9 * 1.02


def test_every_link_takes_its_share_of_the_large_guests() -> None:
    """Placed largest first against the bytes placed so far, the fuller slow2 takes one of
    the 16 GiB guests too, not only the small guests the others left (whose fixed cost per
    migration would then run on a slow link at the drain's end)."""
    drained = plan(fuller_slow_target(), link_gbps=LINKS)
    large = Counter(move.target for move in drained.moves if move.memory_bytes >= 8 * GIB)
    assert large == {"fast": 2, "slow1": 1, "slow2": 1}


def test_the_order_interleaves_targets_by_their_link_time() -> None:
    """Drawn by bytes scheduled over link weight: fast is drawn twice as often as each slow."""
    moves = plan(fast_into_slow(), link_gbps=LINKS).moves
    first = Counter(move.target for move in moves[:8])
    assert first == {"fast": 4, "slow1": 2, "slow2": 2}


def test_budgets_hold_nothing_back_where_the_source_binds() -> None:
    """A link's budget is what it carries while the drain's floor so far passes: the
    source's egress, or the targets' total ingress (moves in flight included) if longer."""
    assert link_budgets("pve1", {"a": 10.0, "b": 10.0}, {"pve1": 10, "a": 10, "b": 10}, 8, 0) == {
        "a": 8.0,  # the source binds: either target may take all
        "b": 8.0,
    }
    assert link_budgets("pve1", {"a": 10.0, "b": 5.0}, {"pve1": 25, "a": 10, "b": 5}, 30, 0) == {
        "a": 20.0,  # the targets bind: shares in proportion to the links
        "b": 10.0,
    }
    assert link_budgets("pve1", {"a": 1.0, "b": 1.0}, {}, 4, 12) == {"a": 8.0, "b": 8.0}
    # no target declared: they weigh 1, as does the source whatever it declares
    assert link_budgets("pve1", {"a": 1.0, "b": 1.0}, {"pve1": 25}, 4, 0) == {"a": 4.0, "b": 4.0}


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


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 4, 8, 16, 32]), min_size=1, max_size=30),
    used=st.lists(st.sampled_from([0, 300, 600, 900]), min_size=3, max_size=3),
    source=GBPS,
    speeds=st.tuples(GBPS, GBPS, GBPS),
)
def test_no_link_ends_later_than_the_floor_and_its_last_guest(
    sizes: list[int], used: list[int], source: float, speeds: tuple[float, ...]
) -> None:
    """With memory to spare however full each target is, every target's bytes over its link
    (capped by the source's) end by the drain's floor (its bytes over the source's link, or
    over the targets' total) plus its last guest, the smallest (placed largest first), over
    the slowest link: list scheduling's bound. Memory's pull towards the emptier nodes broke
    it."""
    names = ("t1", "t2", "t3")
    total = sum(sizes)
    inventory = Inventory(
        (
            node("pve1", 4096, max_cpu=BIG_CPU),
            *(
                node(name, 1024 + total, used_gib=taken, max_cpu=BIG_CPU)
                for name, taken in zip(names, used, strict=True)
            ),
        ),
        tuple(vm(100 + i, size) for i, size in enumerate(sizes)),
    )
    links = {"pve1": source, **dict(zip(names, speeds, strict=True))}
    drained = plan(inventory, link_gbps=links)
    assert drained.complete
    weights = {name: min(links[name], source) for name in names}
    floor = max(total / source, total / sum(weights.values()))
    for name in {move.target for move in drained.moves}:
        guests = [move.memory_bytes / GIB for move in drained.moves if move.target == name]
        assert sum(guests) / weights[name] <= floor + min(guests) / min(weights.values()) + 1e-9
