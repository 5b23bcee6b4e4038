"""Which runs make up the quick and the full bench, and running them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.contenders import (
    LINKS_DECLARED,
    run_migrateall,
    run_proxlb,
    run_proxmigrate,
    run_proxmigrate_with_links,
)
from bench.figures import RunFigures
from bench.scenarios import (
    FAST_INTO_SLOW,
    FAST_SOURCE,
    ONE_NODE,
    SLOW_LINKS,
    TWO_DRAINS_60,
    TWO_NODES,
    WRITE_HEAVY,
    Scenario,
)

log = logging.getLogger(__name__)

Runner = Callable[[Scenario, int, int], RunFigures]
CONTENDERS: dict[str, Runner] = {
    "proxmigrate": run_proxmigrate,
    LINKS_DECLARED: run_proxmigrate_with_links,
    "migrateall": run_migrateall,
    "proxlb": run_proxlb,
}


# clusters unlike the published three (issue 13): slow links, write-heavy giants, a fast
# source into slower fuller targets, two drains under MaxStartups 10:30:60
NEW_KINDS = (SLOW_LINKS, WRITE_HEAVY, FAST_INTO_SLOW, TWO_DRAINS_60)


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    contender: str
    levels: tuple[int, ...]
    seeds: tuple[int, ...]


def suite(quick: bool, with_proxlb: bool) -> list[Plan]:
    seeds = (1, 2, 3) if quick else (1, 2, 3, 4, 5, 6, 7)
    sweep = (8, 32) if quick else (4, 8, 16, 32, 64)
    plans = [
        Plan(ONE_NODE, "proxmigrate", sweep, seeds),
        Plan(ONE_NODE, "migrateall", tuple(n for n in sweep if n >= 8), seeds),
        Plan(TWO_NODES, "proxmigrate", (8, 32), seeds),
        Plan(TWO_NODES, "migrateall", (8, 16, 32) if not quick else (8,), seeds),
    ]
    if not quick:
        plans += [
            Plan(FAST_SOURCE, "proxmigrate", (8, 16, 32), seeds),
            Plan(FAST_SOURCE, "migrateall", (8, 16, 32), seeds),
        ]
        for scenario in NEW_KINDS:
            plans += [
                Plan(scenario, "proxmigrate", (8, 32), seeds[:3]),
                Plan(scenario, "migrateall", (8,), seeds[:3]),
            ]
    if not quick:  # the same runs with the links declared (`nodeLinks`)
        plans += [
            Plan(plan.scenario, LINKS_DECLARED, plan.levels, plan.seeds)
            for plan in list(plans)
            if plan.contender == "proxmigrate"
        ]
    if with_proxlb and not quick:
        # one run per level, each 3-4 real minutes (ProxLB reads every VM's RRD data first,
        # then runs at PROXLB_TIME_SCALE): too slow for the quick set
        plans.append(Plan(ONE_NODE, "proxlb", (8, 32), (1,)))
    return plans


def run_all(plans: Iterable[Plan]) -> tuple[list[RunFigures], list[str]]:
    """Every run of every plan; a contender that cannot run is skipped with a note."""
    figures: list[RunFigures] = []
    notes: list[str] = []
    for plan in plans:
        runner = CONTENDERS[plan.contender]
        for level in plan.levels:
            for seed in plan.seeds:
                label = f"{plan.scenario.name} {plan.contender} x{level} seed {seed}"
                try:
                    figures.append(runner(plan.scenario, level, seed))
                except Exception as error:  # a contender's failure must not sink the others
                    notes.append(f"{label}: skipped ({type(error).__name__}: {error})")
                    log.warning("%s failed", label, exc_info=True)
                    break
                print(f"  {label}: {figures[-1].makespan:.0f} s", file=sys.stderr, flush=True)
    return figures, notes
