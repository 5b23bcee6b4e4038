"""Predict a drain under a policy: several seeded runs, paced and unpaced, summarized."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from proxmigrate.engine import EnginePolicy, MaxStartups
from proxmigrate.planning import DrainPlan, UnplaceableVM
from proxmigrate.simulate.bounds import LowerBound, drain_lower_bound
from proxmigrate.simulate.drain import DrainOptions, LibraryDrain, Progress
from proxmigrate.simulate.model import cluster_from_config
from proxmigrate.simulate.outcome import TargetLoad, movable_guests, summarize

ProgressSink = Callable[[str, Progress], None]  # (label, progress)


@dataclass(frozen=True)
class RunSummary:
    makespan: float
    ssh_drops: int  # attempts that failed (or ended with problems) on an sshd drop
    left_behind: int
    api_requests: int


@dataclass(frozen=True)
class Prediction:
    max_parallel: int
    bound: LowerBound
    paced: tuple[RunSummary, ...]
    unpaced: tuple[RunSummary, ...]  # the same limits without handshake pacing
    targets: tuple[TargetLoad, ...]  # of the first paced run
    unplaceable: tuple[UnplaceableVM, ...]
    moves: int

    @property
    def median_makespan(self) -> float:
        return statistics.median(run.makespan for run in self.paced)


def unpaced(policy: EnginePolicy) -> EnginePolicy:
    """`policy`'s caps and retries without handshake pacing or the stream rules (rate floor,
    convergence): every start fits at once, as when a tool just keeps N migrations running
    (the comparison for the SSH drop risk)."""
    return replace(
        policy,
        min_stream_rate=None,
        convergence_margin=None,
        ssh_max_startups=MaxStartups.parse("100000"),
        handshake_safety=1.0,
        handshake_seconds=1e-6,
        start_spread_seconds=0.0,
        end_spread_seconds=0.0,
    )


def predict(
    config: dict[str, Any],
    drained: Sequence[str],
    policy: EnginePolicy,
    *,
    runs: int = 3,
    seed: int = 1,
    compare_unpaced: bool = True,
    progress: ProgressSink | None = None,
) -> Prediction:
    """Drain `drained` of the cluster `config` describes (pvesim format) `runs` times."""
    paced: list[RunSummary] = []
    lost: list[RunSummary] = []
    targets: tuple[TargetLoad, ...] = ()
    unplaceable: tuple[UnplaceableVM, ...] = ()
    moves = 0
    bound = drain_lower_bound(cluster_from_config(config, seed), drained, policy.max_parallel)
    for run in range(runs):
        label = f"maxParallel {policy.max_parallel}, run {run + 1}/{runs}"
        summary, outcome_targets, plans = _run(config, drained, policy, seed + run, label, progress)
        paced.append(summary)
        if run == 0:
            targets = outcome_targets
            unplaceable = tuple(vm for plan in plans for vm in plan.unplaceable)
            moves = sum(len(plan.moves) for plan in plans)
        if compare_unpaced:
            label = f"maxParallel {policy.max_parallel} unpaced, run {run + 1}/{runs}"
            lost.append(_run(config, drained, unpaced(policy), seed + run, label, progress)[0])
    return Prediction(
        policy.max_parallel, bound, tuple(paced), tuple(lost), targets, unplaceable, moves
    )


def _run(
    config: dict[str, Any],
    drained: Sequence[str],
    policy: EnginePolicy,
    seed: int,
    label: str,
    progress: ProgressSink | None,
) -> tuple[RunSummary, tuple[TargetLoad, ...], tuple[DrainPlan, ...]]:
    cluster = cluster_from_config(config, seed)
    movable = movable_guests(cluster, drained)
    drain = LibraryDrain(cluster, drained, policy, DrainOptions(), seed=seed)
    result = drain.run(None if progress is None else lambda p: progress(label, p))
    outcome = summarize(
        cluster.ground_truth(), drained=drained, start=result.started_at, movable=movable
    )
    summary = RunSummary(
        makespan=outcome.makespan,
        ssh_drops=outcome.ssh_drop_failures,
        left_behind=len(outcome.left_behind),
        api_requests=result.total_api_requests,
    )
    return summary, outcome.targets, result.plans
