"""The dirty-aware lower bound: each guest's re-sent memory at the best rate it could get;
and the bound of one plan: each node's own bytes over its own link."""

from __future__ import annotations

import pytest

from proxmigrate.simulate.bounds import (
    best_rate,
    drain_lower_bound,
    link_capacity,
    plan_lower_bound,
)
from proxmigrate.simulate.model import cluster_from_config
from pvesim.model import Cluster

GIB = 2**30


def cluster(dirty_mib_s: list[float], nic_gbit: float = 10.0) -> Cluster:
    return cluster_from_config(
        {
            "nodes": [{"name": n, "memory_gib": 256, "nic_gbit": nic_gbit} for n in ("a", "b")],
            "vms": [
                {"vmid": 100 + i, "node": "a", "memory_gib": 8, "used_gib": 4, "dirty_mib_s": d}
                for i, d in enumerate(dirty_mib_s)
            ],
        },
        seed=1,
    )


def test_re_sent_memory_counts_at_the_best_rate() -> None:
    model = cluster([0.0, 0.0])
    calm = drain_lower_bound(model, ["a"], dirty=True)
    assert calm.bytes == 8 * GIB and not calm.stuck  # nothing dirtied: the plain bound
    assert calm.seconds == pytest.approx(drain_lower_bound(model, ["a"]).seconds)
    busy = cluster([0.0, 0.0])
    rate = best_rate(busy, "a", ["a"])
    busy.vms[101].dirty_rate = rate / 2  # pre-copy sends its 4 GiB twice, at best
    bound = drain_lower_bound(busy, ["a"], dirty=True)
    assert bound.bytes == pytest.approx(12 * GIB, rel=1e-6)
    assert bound.seconds == pytest.approx(12 * GIB / link_capacity(busy, "a"), rel=1e-6)


def test_a_guest_dirtying_faster_than_any_stream_is_stuck() -> None:
    model = cluster([2000.0, 1.0], nic_gbit=1.0)  # 2000 MiB/s over a 1 Gbit/s link
    bound = drain_lower_bound(model, ["a"], dirty=True)
    assert bound.stuck == (100,)
    assert bound.bytes > 8 * GIB  # the other guest still re-sends a little


def three_nodes() -> Cluster:
    """a (25 Gbit/s) holds four running 8 GiB guests (4 GiB in use) and a stopped one; b is
    on 10 Gbit/s, c on 5."""
    return cluster_from_config(
        {
            "nodes": [
                {"name": n, "memory_gib": 256, "nic_gbit": gbit}
                for n, gbit in (("a", 25), ("b", 10), ("c", 5))
            ],
            "vms": [
                {"vmid": 100 + i, "node": "a", "memory_gib": 8, "used_gib": 4, "dirty_mib_s": 0}
                for i in range(4)
            ]
            + [{"vmid": 200, "node": "a", "memory_gib": 8, "running": False}],
        },
        seed=1,
    )


def test_a_plan_that_loads_a_slow_target_is_bounded_by_its_ingress() -> None:
    model = three_nodes()
    ingress = link_capacity(model, "b") + link_capacity(model, "c")
    drain = drain_lower_bound(model, ["a"])  # 16 GiB over b's and c's ingress together
    assert drain.seconds == pytest.approx(16 * GIB / ingress)
    to_c = plan_lower_bound(model, [(100 + i, "a", "c") for i in range(4)] + [(200, "a", "b")])
    assert to_c.bytes == 16 * GIB  # the stopped guest sends no memory
    assert to_c.seconds == pytest.approx(16 * GIB / link_capacity(model, "c"))
    assert to_c.bottleneck.startswith("c ingress")
    one_on_c = plan_lower_bound(model, [(100, "a", "c")] + [(i, "a", "b") for i in (101, 102, 103)])
    assert one_on_c.seconds == pytest.approx(12 * GIB / link_capacity(model, "b"))
    assert drain.seconds < one_on_c.seconds < to_c.seconds


def test_a_plan_re_sends_at_the_rate_of_its_own_links() -> None:
    model = three_nodes()
    model.vms[100].dirty_rate = link_capacity(model, "c") / 2  # half c's 5 Gbit/s link
    bound = plan_lower_bound(model, [(100, "a", "c")], parallel=1, dirty=True)
    assert bound.bytes == pytest.approx(8 * GIB, rel=1e-6)  # 4 GiB in use, sent twice
    assert bound.seconds == pytest.approx(8 * GIB / link_capacity(model, "c"), rel=1e-6)
    # the drain's bound lets it go to b, where it re-sends less
    drain = drain_lower_bound(model, ["a"], dirty=True)
    assert bound.bytes - 4 * GIB > drain.bytes - 16 * GIB > 0
