"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.figures import RunFigures


def makespan_vs_concurrency(runs: Sequence[RunFigures], scenario: str, path: Path) -> None:
    """Median makespan per level for each contender, with min-max bars and the lower bound."""
    by_contender: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    bounds: dict[int, float] = {}
    for run in runs:
        if run.scenario == scenario:
            by_contender[run.contender][run.level].append(run.makespan)
            bounds[run.level] = run.bound
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for contender, levels in sorted(by_contender.items()):
        xs = sorted(levels)
        medians = [statistics.median(levels[x]) for x in xs]
        low = [m - min(levels[x]) for m, x in zip(medians, xs, strict=True)]
        high = [max(levels[x]) - m for m, x in zip(medians, xs, strict=True)]
        axes.errorbar(xs, medians, yerr=[low, high], marker="o", capsize=3, label=contender)
    if bounds:
        xs = sorted(bounds)
        axes.plot(xs, [bounds[x] for x in xs], "k--", label="lower bound")
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(bounds), [str(x) for x in sorted(bounds)])
    axes.set_xlabel("parallel migrations (maxParallel / maxworkers / parallel_jobs)")
    axes.set_ylabel("drain time, simulated s")
    axes.set_title(f"{scenario}: makespan vs concurrency")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def inflight_over_time(runs: Sequence[RunFigures], path: Path, title: str) -> None:
    """Migrations in flight against time, one step line per run given."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        if not run.inflight:
            continue
        times = [0.0, *(at for at, _ in run.inflight)]
        counts = [0, *(count for _, count in run.inflight)]
        axes.step(times, counts, where="post", label=f"{run.contender} x{run.level}")
    axes.set_xlabel("simulated s since the drain began")
    axes.set_ylabel("migrations in flight")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
