"""`python -m bench.rolling`: a rolling maintenance of an 8-node cluster with return home.

proxmigrate: before each step, `plan_rolling` on the live model inventory for the nodes left
(the step's drains avoid the nodes drained later), the step's moves run through the
operator's runtime and engine (`LibraryDrain`), then `plan_return` on the inventory the
drain left sends the guests home the same way; as the NodeMaintenance controller would do
it (docs/design/rolling-maintenance.md). The naive sequence, per node: `migrateall` to the
node with the most free memory, then `migrateall -vms` of the same guests back.

Both run at the same parallel level (proxmigrate's maxParallel, migrateall's maxworkers) on
the same seeded cluster. The maintenance itself (upgrade, reboot) takes no time here: it
costs both the same. Bytes are the memory in use of each guest a migration moved (what a
live migration copies at least; stopped guests copy none).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.contenders import WATCHER_POLL_SECONDS, _roomiest_targets
from bench.scenarios import Scenario
from proxmigrate.engine import EnginePolicy
from proxmigrate.planning import DrainPlan, LocalDisksPolicy
from proxmigrate.planning.drain import DrainRequest
from proxmigrate.planning.returns import Departure, departures_of, plan_return
from proxmigrate.planning.rolling import RollingRequest, plan_rolling
from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.simulate.drain import LibraryDrain
from proxmigrate.simulate.inventory import drained_inventory
from pvesim.model import Cluster

ROLLING = Scenario(
    "rolling-8",
    "8 nodes (448 GiB) x 25 VMs, 10 Gbit/s, drained one at a time with return home",
    nodes=8,
    vms_per_node=25,
    drained=tuple(f"pve{n}" for n in range(1, 9)),  # in this order
)

LEVELS = (8, 32)
# as `migrateall ... with-local-disks 1`: both contenders move guests with local disks
OPTIONS = DrainRequest(node="", local_disks=LocalDisksPolicy.MIGRATE)


@dataclass(frozen=True)
class RollingFigures:
    scenario: str
    contender: str
    level: int
    seed: int
    makespan: float  # virtual seconds, every step's migrations end to end
    moves: int  # migrations that moved a guest
    failed: int  # migration attempts that did not
    moved_bytes: int
    not_home: int  # guests not on their node at the end


@dataclass
class _StepDrain(LibraryDrain):
    """One rolling step: the first step of `plan_rolling` over the nodes still to do."""

    remaining: tuple[str, ...] = ()

    async def plan(self, runtime: ClusterRuntime) -> tuple[DrainPlan, ...]:
        inventory = await drained_inventory(runtime, self.nodes)
        request = RollingRequest(self.remaining, at_once=len(self.nodes), options=OPTIONS)
        return plan_rolling(inventory, request).steps[0].drains


@dataclass
class _ReturnDrain(LibraryDrain):
    """The return of a step's guests, run as a drain whose moves go home."""

    departures: tuple[Departure, ...] = field(default=())

    async def plan(self, runtime: ClusterRuntime) -> tuple[DrainPlan, ...]:
        parked = {departure.parked for departure in self.departures}
        inventory = await drained_inventory(runtime, parked)
        returns = plan_return(inventory, self.departures, OPTIONS)
        home = self.nodes[0]
        return (DrainPlan(home, (), (), returns.moves, returns.skipped, (), 0),)


def run_proxmigrate(scenario: Scenario, level: int, seed: int) -> RollingFigures:
    cluster = scenario.build(seed)
    homes, start = _homes(cluster), cluster.now
    policy = EnginePolicy(max_parallel=level)
    nodes = scenario.drained
    for index, node in enumerate(nodes):
        drained = _StepDrain(cluster, (node,), policy, seed=seed, remaining=nodes[index:]).run()
        departures = tuple(d for plan in drained.plans for d in departures_of(plan.moves))
        _ReturnDrain(cluster, (node,), policy, seed=seed, departures=departures).run()
    return _figures(scenario, "proxmigrate", level, seed, cluster, homes, start)


def run_naive(scenario: Scenario, level: int, seed: int) -> RollingFigures:
    cluster = scenario.build(seed)
    homes, start = _homes(cluster), cluster.now
    for node in scenario.drained:
        (target,) = _roomiest_targets(cluster, (node,))
        leaving = sorted(vm.vmid for vm in cluster.vms.values() if vm.node == node)
        _wait(cluster, cluster.migrateall(node, target, maxworkers=level, with_local_disks=True))
        parked = [vmid for vmid in leaving if cluster.vms[vmid].node == target]
        back = cluster.migrateall(target, node, maxworkers=level, vms=parked, with_local_disks=True)
        _wait(cluster, back)
    return _figures(scenario, "naive migrateall", level, seed, cluster, homes, start)


def _wait(cluster: Cluster, upid: str) -> None:
    while cluster.tasks[upid].running:
        cluster.advance_to(cluster.now + WATCHER_POLL_SECONDS)
    cluster.run_until_idle()


def _homes(cluster: Cluster) -> dict[int, str]:
    return {vm.vmid: vm.node for vm in cluster.vms.values()}


def _figures(
    scenario: Scenario,
    contender: str,
    level: int,
    seed: int,
    cluster: Cluster,
    homes: dict[int, str],
    start: float,
) -> RollingFigures:
    records = [
        (vmid, record)
        for vmid, runs in cluster.migrations.items()
        for record in runs
        if record.start >= start
    ]
    moved = [(vmid, record) for vmid, record in records if record.vm_moved]
    ends = [record.end for _, record in records if record.end is not None]
    return RollingFigures(
        scenario=scenario.name,
        contender=contender,
        level=level,
        seed=seed,
        makespan=max(ends, default=start) - start,
        moves=len(moved),
        failed=len(records) - len(moved),
        moved_bytes=sum(cluster.vms[vmid].mem for vmid, r in moved if r.mode != "offline"),
        not_home=sum(1 for vmid, node in homes.items() if cluster.vms[vmid].node != node),
    )


def table(runs: Sequence[RollingFigures]) -> str:
    """Per scenario, contender and level: median and range over the seeds."""
    lines = [
        "| scenario | contender | parallel | makespan s (median, min-max) | moves | failed"
        " | moved GiB | not home |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys((run.scenario, run.contender, run.level) for run in runs):
        mine = [run for run in runs if (run.scenario, run.contender, run.level) == key]
        spans = [run.makespan for run in mine]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]}"
            f" | {statistics.median(spans):.0f} ({min(spans):.0f}-{max(spans):.0f})"
            f" | {_spread([r.moves for r in mine])} | {_spread([r.failed for r in mine])}"
            f" | {_spread([r.moved_bytes // 2**30 for r in mine])}"
            f" | {_spread([r.not_home for r in mine])} |"
        )
    return "\n".join(lines)


def _spread(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="model seeds 1..N (default 3)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    runs = []
    for level in LEVELS:
        for seed in range(1, args.seeds + 1):
            for run in (run_proxmigrate, run_naive):
                runs.append(run(ROLLING, level, seed))
                print(f"  x{level} seed {seed} {runs[-1].contender}: "
                      f"{runs[-1].makespan:.0f} s", file=sys.stderr)  # fmt: skip
    print(f"`python -m bench.rolling --seeds {args.seeds}`: {ROLLING.title}; "
          f"took {time.monotonic() - began:.0f} s\n")  # fmt: skip
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
