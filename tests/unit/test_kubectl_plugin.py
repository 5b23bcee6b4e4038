"""The plugin's pure parts: progress line, tables, summaries, exit codes, progress following."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest

from proxmigrate.kubectl_plugin import (
    PluginError,
    build_parser,
    check_node,
    drain_manifest,
    exit_code,
    follow_drain,
    progress_bar,
    render_drains,
    render_plan,
    render_progress,
    render_summary,
    render_table,
    throughput,
)

GIB = 1024**3
NOW = datetime.datetime(2026, 1, 1, 12, 0, 40, tzinfo=datetime.UTC)


def draining(**overrides: Any) -> dict[str, Any]:
    status = {
        "phase": "Draining",
        "total": 40,
        "migrated": 10,
        "failed": 2,
        "skipped": 0,
        "remaining": 28,
        "progress": 0.3,
        "memoryBytesMigrated": 40 * GIB,
        "startTime": "2026-01-01T12:00:00Z",
        "eta": "1m30s",
    }
    status.update(overrides)
    return status


@pytest.mark.parametrize(
    ("ratio", "bar"),
    [(0.0, "[----]"), (0.5, "[##--]"), (1.0, "[####]"), (1.7, "[####]"), (-1, "[----]")],
)
def test_progress_bar_is_clamped(ratio: float, bar: str) -> None:
    assert progress_bar(ratio, width=4) == bar


def test_progress_line_shows_done_total_throughput_eta_and_phase() -> None:
    line = render_progress(draining(), NOW)
    assert line.startswith("[#######-----------------]")
    assert "12/40 VMs" in line  # migrated + failed
    assert "10 migrated" in line and "2 failed" in line
    assert "1.0 GiB/s" in line  # 40 GiB in 40 s
    assert "ETA 1m30s" in line and line.endswith("Draining")
    assert "skipped" not in line


def test_progress_line_before_any_move_has_no_rate_or_eta() -> None:
    line = render_progress({"phase": "Pending"}, NOW)
    assert "0/0 VMs" in line and "/s" not in line and "ETA" not in line
    assert throughput({"startTime": "2026-01-01T12:00:00Z"}, NOW) is None


def test_table_pads_columns() -> None:
    assert render_table(["A", "LONG"], [["xyz", 1]]) == "A    LONG\nxyz  1"


def test_plan_table_lists_moves_and_unplaceable_with_missing_memory() -> None:
    plan = {
        "entries": [
            {"order": 1, "vmid": 101, "name": "db", "memoryBytes": 16 * GIB, "from": "a", "to": "b"}
        ],
        "unplaceable": [{"vmid": 102, "name": "big", "reason": "needs 64.0 GiB"}],
        "missingMemoryBytes": 8 * GIB,
    }
    text = render_plan(plan)
    lines = text.splitlines()
    assert lines[0].split() == ["ORDER", "VMID", "NAME", "MEMORY", "FROM", "TO"]
    assert lines[1].split() == ["1", "101", "db", "16.0", "GiB", "a", "b"]
    assert "1 VMs to move, 16.0 GiB of memory" in text
    assert "102 (big): needs 64.0 GiB" in text
    assert "memory missing on the targets: 8.0 GiB" in text


def test_drains_table_and_summary_with_problem() -> None:
    failed = draining(
        phase="Failed",
        remaining=0,
        progress=1.0,
        completionTime="2026-01-01T12:02:00Z",
        conditions=[{"type": "Degraded", "status": "True", "message": "2 VMs failed: 101: x"}],
    )
    table = render_drains(
        [{"metadata": {"name": "d"}, "spec": {"nodeName": "pve1"}, "status": failed}]
    )
    assert table.splitlines()[1].split() == ["d", "pve1", "Failed", "10/40", "2", "100%", "1m30s"]
    summary = render_summary("d", failed)
    assert summary.startswith("nodedrain/d Failed: 10 migrated, 2 failed, 0 skipped of 40 in 2m")
    assert summary.endswith("2 VMs failed: 101: x")


@pytest.mark.parametrize(
    ("phase", "code"), [("Drained", 0), ("Failed", 1), ("Blocked", 1), ("Cancelled", 1)]
)
def test_exit_code(phase: str, code: int) -> None:
    assert exit_code(phase) == code


def test_unknown_node_is_refused_with_the_known_ones() -> None:
    cluster = {"metadata": {"name": "lab"}, "status": {"nodes": [{"name": "b"}, {"name": "a"}]}}
    check_node(cluster, "a")
    with pytest.raises(PluginError, match=r"node c is not in ProxmoxCluster lab \(nodes: a, b\)"):
        check_node(cluster, "c")
    check_node({"metadata": {"name": "lab"}}, "c")  # not synced yet: the operator decides


def test_drain_manifest_sets_only_what_was_asked() -> None:
    body = drain_manifest("pve1", "lab", name="drain-pve1", max_parallel=3)
    assert body["metadata"] == {"name": "drain-pve1"}
    assert body["spec"] == {"clusterRef": {"name": "lab"}, "nodeName": "pve1", "maxParallel": 3}
    dry = drain_manifest("pve1", "lab", generate_name="plan-pve1-", dry_run=True)
    assert dry["metadata"] == {"generateName": "plan-pve1-"} and dry["spec"]["dryRun"] is True


def test_follow_prints_changes_until_a_final_phase() -> None:
    statuses = iter(
        [
            {"status": draining(phase="Pending", startTime=None, eta=None)},
            {"status": draining(phase="Pending", startTime=None, eta="5s")},  # same counts
            {"status": draining(phase="Drained", remaining=0, progress=1.0)},
        ]
    )
    out = io.StringIO()
    final = follow_drain(lambda: next(statuses), out, live=False, poll_seconds=0)
    assert final["phase"] == "Drained"
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("Pending") and lines[1].endswith("Drained")


def test_follow_fails_when_the_drain_disappears() -> None:
    with pytest.raises(PluginError, match="deleted"):
        follow_drain(lambda: None, io.StringIO(), live=True, poll_seconds=0)


def test_parser_reads_drain_options() -> None:
    args = build_parser().parse_args(
        ["-n", "ops", "drain", "pve1", "--cluster", "lab", "--max-parallel", "4", "--wait"]
    )
    assert (args.namespace, args.node, args.cluster, args.max_parallel) == ("ops", "pve1", "lab", 4)
    assert args.wait and not args.dry_run
