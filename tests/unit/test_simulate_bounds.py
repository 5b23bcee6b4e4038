"""The dirty-aware lower bound: each guest's re-sent memory at the best rate it could get."""

from __future__ import annotations

import pytest

from proxmigrate.simulate.bounds import best_rate, drain_lower_bound, link_capacity
from proxmigrate.simulate.model import cluster_from_config

GIB = 2**30


def cluster(dirty_mib_s: list[float], nic_gbit: float = 10.0) -> object:
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
