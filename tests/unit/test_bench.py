"""A tiny bench scenario end to end: the figures must be sane, so bench code can fail in CI."""

from __future__ import annotations

from pathlib import Path

from bench.contenders import run_migrateall, run_proxmigrate
from bench.report import inventory_costs, table
from bench.scenarios import Scenario

TINY = Scenario(
    "tiny", "3 nodes, 8 VMs each, drain one", nodes=3, vms_per_node=8, drained=("pve1",)
)


def test_tiny_scenario_figures_are_sane(tmp_path: Path) -> None:
    ours = run_proxmigrate(TINY, 4, seed=1)
    theirs = run_migrateall(TINY, 4, seed=1)
    movable = len(TINY.movable(TINY.build(1)))
    for run in (ours, theirs):
        assert run.bound > 0
        assert run.makespan >= run.bound  # nothing beats moving the bytes
        assert run.dirty_bound is not None and run.plan_bound is not None
        assert run.bound <= run.dirty_bound <= run.plan_bound <= run.makespan
        assert run.moved + run.left_behind == movable
        assert run.requests_per_vm is not None and run.requests_per_vm > 0
        assert run.inflight and run.inflight[-1][1] == 0  # every migration ended
    assert ours.left_behind == 0 and ours.ssh_drops == 0
    for run in (ours, theirs):  # every live migration's pause, from its task log
        assert run.max_pause_ms is not None and 0 < run.max_pause_ms < 1000
        assert run.doublings == 0
    assert max(count for _, count in ours.inflight) <= 4  # maxParallel holds
    assert ours.requests_per_vm is not None and ours.requests_per_vm >= 1  # a POST each at least
    assert ours.cpu_seconds is not None and ours.cpu_seconds > 0
    # one GET /cluster/resources for the plan, one precondition check per guest of pve1
    assert ours.inventory_requests_per_guest == (1 + 8) / 8
    assert theirs.inventory_requests_per_guest is None
    assert theirs.cpu_seconds is None  # migrateall runs on PVE, not on our side

    markdown = table([ours, theirs])
    assert markdown.count("\n| tiny |") == 2
    assert "| proxmigrate | 4 | 1 |" in markdown
    assert inventory_costs([ours, theirs]) == [
        "tiny: 1.125 API requests per guest of the drained node(s) to read the inventory "
        "with local disks and devices"
    ]

    from bench import plots

    path = tmp_path / "makespan.png"
    plots.makespan_vs_concurrency([ours, theirs], "tiny", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
