"""bench.rolling on a small cluster: both contenders bring every guest home."""

from __future__ import annotations

from dataclasses import replace

from bench.rolling import ROLLING, run_naive, run_proxmigrate

SMALL = replace(
    ROLLING, name="rolling-3", nodes=3, vms_per_node=3, drained=("pve1", "pve2", "pve3")
)


def test_both_contenders_bring_every_guest_home_with_two_moves_each() -> None:
    mine, naive = run_proxmigrate(SMALL, 4, 1), run_naive(SMALL, 4, 1)
    for run in (mine, naive):
        assert run.not_home == 0 and run.failed == 0
        assert run.moves > 0 and run.moves % 2 == 0
        assert run.makespan > 0
    assert mine.moves == naive.moves
    assert mine.moved_bytes == naive.moved_bytes > 0
