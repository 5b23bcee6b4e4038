"""One run's figures, and how our own process's peak memory is measured per run."""

from __future__ import annotations

import contextlib
import gc
import re
from dataclasses import dataclass, field
from pathlib import Path

from proxmigrate.simulate.outcome import DrainOutcome

_STATUS = Path("/proc/self/status")


@dataclass
class RunFigures:
    scenario: str
    contender: str  # e.g. "proxmigrate", "migrateall", "proxlb"
    level: int  # maxParallel / maxworkers / parallel_jobs
    seed: int
    makespan: float
    bound: float
    moved: int
    left_behind: int
    ssh_drops: int  # attempts that failed or ended with problems because sshd dropped them
    port_conflicts: int
    api_requests: int | None  # PVE API requests of the contender's client (None: unknown)
    cpu_seconds: float | None  # our side's CPU (None: not ours to measure)
    peak_rss_mib: float | None
    inflight: tuple[tuple[float, int], ...] = field(default=(), repr=False)
    # the stricter bound: each guest's re-sent memory at its best rate (simulate/bounds.py)
    dirty_bound: float | None = None
    # the dirty-aware bound of where this run sent each guest (simulate/bounds.py
    # plan_lower_bound): above `dirty_bound` by what the plan alone costs (None: unknown)
    plan_bound: float | None = None
    # guest pauses from the migrations' task logs (None: logs not read, e.g. ProxLB's server)
    max_pause_ms: int | None = None
    p99_pause_ms: int | None = None
    doublings: int | None = None  # downtime-limit doublings
    # requests of the inventory read before planning, per guest of the drained nodes
    # (GET /cluster/resources and one precondition check each); None: not proxmigrate
    inventory_requests_per_guest: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound if self.bound else float("nan")

    @property
    def dirty_ratio(self) -> float | None:
        return self.makespan / self.dirty_bound if self.dirty_bound else None

    @property
    def plan_ratio(self) -> float | None:
        return self.makespan / self.plan_bound if self.plan_bound else None

    @property
    def requests_per_vm(self) -> float | None:
        if self.api_requests is None or not self.moved:
            return None
        return self.api_requests / self.moved


def figures_from(outcome: DrainOutcome, *, bound: float, **fields: object) -> RunFigures:
    """Ground-truth figures of a run plus the contender's own (`fields`)."""
    return RunFigures(
        makespan=outcome.makespan,
        bound=bound,
        moved=outcome.moved,
        left_behind=len(outcome.left_behind),
        ssh_drops=outcome.ssh_drop_failures,
        port_conflicts=outcome.failures.get("port_exhausted", 0),
        inflight=outcome.inflight,
        **fields,  # type: ignore[arg-type]
    )


def reset_peak_rss() -> None:
    """Start a new peak-RSS window for this process (Linux `clear_refs` 5 resets VmHWM)."""
    gc.collect()
    # not Linux or not allowed: the peak then covers the whole process life
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since the last reset, MiB."""
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match[1]) / 1024 if match else None
