"""Median-and-spread Markdown tables of the runs."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from itertools import groupby

from bench.figures import RunFigures

HEADER = (
    "| scenario | contender | parallel | runs | makespan s: median [min-max] "
    "| bound s: bandwidth / dirty-aware / its plan's | ratio to each "
    "| SSH drops / port conflicts per run | VMs left behind per run "
    "| API requests / migrated VM | guest pause ms: max / p99 | downtime doublings per run "
    "| our CPU s | peak RSS MiB |"
)
RULE = "|" + "---|" * (HEADER.count("|") - 1)


def _key(figures: RunFigures) -> tuple[str, str, int]:
    return figures.scenario, figures.contender, figures.level


def _median(values: Sequence[float | None], digits: int) -> str:
    known = [value for value in values if value is not None]
    return f"{statistics.median(known):.{digits}f}" if known else "-"


def _mean(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.1f}" if values else "-"


def table(runs: Iterable[RunFigures]) -> str:
    """One row per scenario, contender and level, in the order first seen."""
    ordered = sorted(runs, key=_key)
    rows = [HEADER, RULE]
    for (scenario, contender, level), group in groupby(ordered, key=_key):
        runs_here = list(group)
        spans = [run.makespan for run in runs_here]
        rows.append(
            "| "
            + " | ".join(
                [
                    scenario,
                    contender,
                    str(level),
                    str(len(runs_here)),
                    f"{statistics.median(spans):.0f} [{min(spans):.0f}-{max(spans):.0f}]",
                    f"{runs_here[0].bound:.0f} / {_median([r.dirty_bound for r in runs_here], 0)}"
                    f" / {_median([r.plan_bound for r in runs_here], 0)}",
                    f"{_median([run.ratio for run in runs_here], 2)} / "
                    f"{_median([run.dirty_ratio for run in runs_here], 2)} / "
                    f"{_median([run.plan_ratio for run in runs_here], 2)}",
                    f"{_mean([run.ssh_drops for run in runs_here])} / "
                    f"{_mean([run.port_conflicts for run in runs_here])}",
                    _mean([run.left_behind for run in runs_here]),
                    _median([run.requests_per_vm for run in runs_here], 2),
                    f"{_median([run.max_pause_ms for run in runs_here], 0)} / "
                    f"{_median([run.p99_pause_ms for run in runs_here], 0)}",
                    _mean([run.doublings for run in runs_here if run.doublings is not None]),
                    _median([run.cpu_seconds for run in runs_here], 3),
                    _median([run.peak_rss_mib for run in runs_here], 0),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def inventory_costs(runs: Iterable[RunFigures]) -> list[str]:
    """Per scenario: what proxmigrate's inventory read before planning costs per guest of the
    drained nodes (GET /cluster/resources plus PVE's precondition check per guest)."""
    lines = []
    for scenario, group in groupby(sorted(runs, key=_key), key=lambda run: run.scenario):
        costs = [r.inventory_requests_per_guest for r in group]
        known = [cost for cost in costs if cost is not None]
        if known:
            lines.append(
                f"{scenario}: {_median(known, 3)} API requests per guest of the drained "
                "node(s) to read the inventory with local disks and devices"
            )
    return lines
