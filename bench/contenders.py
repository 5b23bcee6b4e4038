"""The contenders, each run once on a fresh cluster and judged from the simulator's ground truth."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.figures import RunFigures, figures_from, peak_rss_mib, reset_peak_rss
from bench.scenarios import Scenario
from proxmigrate.engine import EnginePolicy
from proxmigrate.simulate.bounds import drain_lower_bound, plan_lower_bound
from proxmigrate.simulate.drain import DrainOptions, LibraryDrain
from proxmigrate.simulate.model import model_params
from proxmigrate.simulate.outcome import downtime, summarize
from pvesim.model import Cluster
from pvesim.testing import PvesimProcess

WATCHER_POLL_SECONDS = 2.0  # someone watching a migrateall task polls its status this often
PROXLB_TIME_SCALE = 5.0  # simulated seconds per real second for ProxLB runs (see run_proxlb)
PROXLB_TIMEOUT = 600.0  # real seconds


def bound_seconds(scenario: Scenario, cluster: Cluster, level: int) -> float:
    return drain_lower_bound(cluster, scenario.drained, level).seconds


def dirty_bound_seconds(scenario: Scenario, cluster: Cluster, level: int) -> float:
    return drain_lower_bound(cluster, scenario.drained, level, dirty=True).seconds


def downtime_fields(cluster: Cluster, movable: dict[int, int], start: float) -> dict[str, int]:
    """Pause figures of the movable guests' migrations since `start`, from their task logs."""
    logs = [
        cluster.tasks[record.upid].lines
        for vmid in movable
        for record in cluster.migrations.get(vmid, [])
        if record.start >= start and record.upid in cluster.tasks
    ]
    found = downtime(logs)
    return {
        "max_pause_ms": found.max_ms,
        "p99_pause_ms": found.p99_ms,
        "doublings": found.doublings,
    }


def run_proxmigrate(
    scenario: Scenario, level: int, seed: int, options: DrainOptions | None = None
) -> RunFigures:
    """proxmigrate's planner and engine in library mode, `maxParallel` = `level`, at the
    operator's default settings: no `nodeLinks` (unless `options` declare them)."""
    cluster = scenario.build(seed)
    movable = scenario.movable(cluster)
    guests = sum(1 for vm in cluster.vms.values() if vm.node in scenario.drained)
    bound = bound_seconds(scenario, cluster, level)
    dirty_bound = dirty_bound_seconds(scenario, cluster, level)
    reset_peak_rss()
    drain = LibraryDrain(
        cluster,
        scenario.drained,
        EnginePolicy(max_parallel=level),
        options or DrainOptions(declare_links=False),
        seed=seed,
    )
    result = drain.run()
    rss = peak_rss_mib()
    moves = [(move.vmid, move.source, move.target) for plan in result.plans for move in plan.moves]
    outcome = summarize(
        cluster.ground_truth(), drained=scenario.drained, start=result.started_at, movable=movable
    )
    return figures_from(
        outcome,
        bound=bound,
        dirty_bound=dirty_bound,
        plan_bound=plan_lower_bound(cluster, moves, level, dirty=True).seconds,
        scenario=scenario.name,
        contender="proxmigrate" if not drain.options.declare_links else LINKS_DECLARED,
        level=level,
        seed=seed,
        api_requests=result.total_api_requests,
        inventory_requests_per_guest=result.inventory_requests / max(1, guests),
        cpu_seconds=result.cpu_seconds,
        peak_rss_mib=rss,
        note="cut off" if result.cut_off else "",
        **downtime_fields(cluster, movable, result.started_at),
    )


LINKS_DECLARED = "proxmigrate nodeLinks"


def run_proxmigrate_with_links(scenario: Scenario, level: int, seed: int) -> RunFigures:
    """`run_proxmigrate` with every node's link speed declared (`nodeLinks`), which the
    plan and the engine both use."""
    return run_proxmigrate(scenario, level, seed, DrainOptions(declare_links=True))


def run_migrateall(scenario: Scenario, level: int, seed: int) -> RunFigures:
    """`POST /nodes/{n}/migrateall -target T -maxworkers level` per drained node.

    migrateall takes one target: each drained node goes to a different non-drained node,
    the one with the most free memory (what an admin would pick), local disks allowed.
    """
    cluster = scenario.build(seed)
    movable = scenario.movable(cluster)
    bound = bound_seconds(scenario, cluster, level)
    dirty_bound = dirty_bound_seconds(scenario, cluster, level)
    started = cluster.now
    targets = _roomiest_targets(cluster, scenario.drained)
    moves = [
        (vmid, node, target)
        for node, target in zip(scenario.drained, targets, strict=True)
        for vmid in movable
        if cluster.vms[vmid].node == node
    ]
    plan_bound = plan_lower_bound(cluster, moves, level, dirty=True).seconds
    upids = [
        cluster.migrateall(node, target, maxworkers=level, with_local_disks=True)
        for node, target in zip(scenario.drained, targets, strict=True)
    ]
    polls = 0
    while any(cluster.tasks[upid].running for upid in upids):
        cluster.advance_to(cluster.now + WATCHER_POLL_SECONDS)
        polls += len(upids)
    cluster.run_until_idle()
    outcome = summarize(
        cluster.ground_truth(), drained=scenario.drained, start=started, movable=movable
    )
    return figures_from(
        outcome,
        bound=bound,
        dirty_bound=dirty_bound,
        plan_bound=plan_bound,
        scenario=scenario.name,
        contender="migrateall",
        level=level,
        seed=seed,
        api_requests=len(upids) + polls,
        cpu_seconds=None,
        peak_rss_mib=None,
        note=f"targets {', '.join(targets)}",
        **downtime_fields(cluster, movable, started),
    )


def _roomiest_targets(cluster: Cluster, drained: tuple[str, ...]) -> list[str]:
    free = {
        name: node.maxmem - sum(vm.maxmem for vm in cluster.vms.values() if vm.node == name)
        for name, node in cluster.nodes.items()
        if name not in drained
    }
    ranked = sorted(free, key=lambda name: (-free[name], name))
    return ranked[: len(drained)]


def run_proxlb(scenario: Scenario, level: int, seed: int) -> RunFigures:
    """Real ProxLB (pinned in pyproject.toml) against a `pvesim serve` process, maintenance mode.

    The makespan counts from ProxLB's first migration: its start-up (reading the cluster) would
    otherwise be stretched by the time scale.

    ProxLB sleeps 5 real seconds whenever its window is full, which at `PROXLB_TIME_SCALE`
    is 25 simulated seconds: its window refills more coarsely than it would on a real
    cluster, so its makespan here is pessimistic; its failures and requests are not affected.
    """
    from pvesim.contenders.proxlb_runner import run_proxlb as run_real_proxlb

    layout = scenario.build(seed)
    movable = scenario.movable(layout)
    bound = bound_seconds(scenario, layout, level)
    dirty_bound = dirty_bound_seconds(scenario, layout, level)
    args = [
        "--nodes", str(scenario.nodes), "--vms-per-node", str(scenario.vms_per_node),
        "--seed", str(scenario.layout_seed), "--time-scale", str(PROXLB_TIME_SCALE),
        "--start-time", str(model_params().start_time),
    ]  # fmt: skip
    with PvesimProcess(*args) as sim:
        with _children_cpu() as cpu:
            result = run_real_proxlb(sim, scenario.drained, level, PROXLB_TIMEOUT)
        truth = _when_idle(sim)
    starts = [
        record["start"] for vmid in movable for record in truth["migrations"].get(str(vmid), [])
    ]
    start = min(starts, default=float(truth["now"]))
    outcome = summarize(truth, drained=scenario.drained, start=start, movable=movable)
    note = "timed out" if result.timed_out else f"exit {result.exit_code}"
    if result.errors:
        note += f"; ProxLB logged {len(result.errors)} error(s), first: {result.errors[0][:160]}"
    return figures_from(
        outcome,
        bound=bound,
        dirty_bound=dirty_bound,
        scenario=scenario.name,
        contender="proxlb",
        level=level,
        seed=scenario.layout_seed,
        api_requests=sum(int(n) for n in truth.get("api_requests", {}).values()),
        cpu_seconds=cpu[0],
        peak_rss_mib=None,
        note=note,
    )


def _when_idle(sim: PvesimProcess, timeout: float = 60.0) -> dict[str, Any]:
    """Ground truth once no migration runs any more (ProxLB may exit with some in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        truth = sim.state()
        if not truth["inflight_migrations"] or time.monotonic() > deadline:
            return truth
        time.sleep(0.5)


@contextmanager
def _children_cpu() -> Iterator[list[float]]:
    """CPU seconds of the child processes waited for inside the block."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = [0.0]
    yield seconds
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
