"""The engine's pacing against a simple model of the SSH logins PVE migrations make.

Each started migration opens three connections to its target over the start spread
(`/bin/true` at once, `qm start` within a second, `mtunnel` after `qm start` returned) and two
over the end phase (`rm -f`, `qm unlock`), one after the other, each pending (unauthenticated)
for `handshake_seconds` (docs/reference/proxmox.md#ssh-connections-of-one-migration,
#figures-and-measurements). The target's sshd must never see `start` (10 by default) pending
logins at once, or it starts dropping them (#sshd-maxstartups).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

import pytest

from proxmigrate.engine import EnginePolicy, Job, MigrationEngine, Outcome

SSHD_START = 10  # OpenSSH MaxStartups default 10:30:100 (servconf.c, #sshd-maxstartups)
TIMING = EnginePolicy()  # the real-world timings the simulated logins follow


@dataclass
class Run:
    max_pending: int
    max_running: int
    finished: int
    last_start: float


def start_logins(rng: random.Random, at: float) -> list[float]:
    h, spread = TIMING.handshake_seconds, TIMING.start_spread_seconds
    qm_start = at + rng.uniform(h, 1.0)
    mtunnel = rng.uniform(qm_start + h, at + spread)
    return [at, qm_start, mtunnel]


def end_logins(rng: random.Random, at: float) -> list[float]:
    h, spread = TIMING.handshake_seconds, TIMING.end_spread_seconds
    rm = at + rng.uniform(0.0, spread - h)
    return [rm, rng.uniform(rm + h, at + spread)]


def max_overlap(login_starts: list[float], duration: float) -> int:
    edges = sorted([(t, 1) for t in login_starts] + [(t + duration, -1) for t in login_starts])
    pending = peak = 0
    for _, step in edges:  # at equal times -1 sorts first: a login ending frees its slot
        pending += step
        peak = max(peak, pending)
    return peak


def simulate(engine: MigrationEngine, jobs: int, seed: int) -> Run:
    """Drive the engine like the controller would, on virtual time, and record every login."""
    rng = random.Random(seed)
    for n in range(jobs):
        engine.submit(Job(f"vm{n}", 100 + n, "pve1", "pve2"), 0.0)
    events: list[tuple[float, str, str]] = []  # (time, kind, key)
    logins: list[float] = []
    now, max_running, finished, last_start = 0.0, 0, 0, 0.0
    while finished < jobs:
        for job in engine.poll(now):
            last_start = now
            logins += start_logins(rng, now)
            heapq.heappush(events, (now + rng.uniform(20.0, 60.0), "ending", job.key))
        max_running = max(max_running, engine.snapshot(now).running)
        wakeup = engine.next_wakeup(now)
        if wakeup is not None:
            heapq.heappush(events, (wakeup, "wake", ""))
        now, kind, key = heapq.heappop(events)
        if kind == "ending":
            engine.notify_ending(key, now)
            logins += end_logins(rng, now)
            heapq.heappush(events, (now + TIMING.end_window_seconds, "finish", key))
        elif kind == "finish":
            assert engine.finish(key, now, Outcome(True)).kind == "done"
            finished += 1
    return Run(max_overlap(logins, TIMING.handshake_seconds), max_running, finished, last_start)


@pytest.mark.parametrize("seed", range(10))
def test_forty_migrations_to_one_target_stay_below_sshd_start(seed: int) -> None:
    # pacing alone: no stream rules (this simulation reports no transfer rates)
    engine = MigrationEngine(
        EnginePolicy(max_parallel=32, min_stream_rate=None, convergence_margin=None),
        random.Random(seed),
    )
    run = simulate(engine, jobs=40, seed=seed)
    assert run.finished == 40
    assert run.max_pending < SSHD_START
    assert run.max_pending <= engine.handshake_budget("pve2")
    # pacing spaces starts, yet many long migrations run at once
    assert 20 <= run.max_running <= 32
    assert run.last_start == pytest.approx(39 * engine.start_interval("pve2"), rel=0.3)


def test_without_pacing_the_same_load_would_overrun_sshd() -> None:
    """Control: the model is strict enough to catch a burst (so the test above can fail)."""
    unpaced = EnginePolicy(
        max_parallel=32,
        start_spread_seconds=0.0,
        handshake_seconds=1e-6,
        min_stream_rate=None,
        convergence_margin=None,
    )
    run = simulate(MigrationEngine(unpaced, random.Random(0)), jobs=40, seed=0)
    assert run.max_pending >= SSHD_START


def started(engine: MigrationEngine, key: str, now: float, target: str = "pve2") -> None:
    engine.submit(Job(key, int.from_bytes(key.encode(), "big"), "pve1", target), now)
    assert [job.key for job in engine.poll(now)] == [key]


def test_a_target_whose_start_phases_run_long_gets_a_longer_window() -> None:
    """Handshakes slow down on a busy host: the window follows the slowest recent phase."""
    engine = MigrationEngine(EnginePolicy())
    assert engine.start_interval("pve2") == pytest.approx(5.25 / 5)
    started(engine, "a", 0.0)
    engine.notify_tunnel_up("a", 13.0, start_phase=12.0)
    assert engine.pending_handshakes("pve2", 13.0) == 0  # its slot is free at once
    assert engine.start_interval("pve2") == pytest.approx(12.0 * 1.25 / 5)
    assert engine.start_interval("pve3") == pytest.approx(5.25 / 5)  # per target
    started(engine, "b", 20.0)
    assert engine.pending_handshakes("pve2", 20.0 + 14.9) == 1  # held 15 s, not 5.25
    assert engine.pending_handshakes("pve2", 20.0 + 15.0) == 0
    engine.notify_tunnel_up("b", 24.0, start_phase=3.0)
    for key in ("a", "b"):
        engine.finish(key, 30.0, Outcome(True))
    for n in range(7):  # the slow phase ages out after 8 observations
        started(engine, f"c{n}", 40.0 + 4 * n)
        engine.notify_tunnel_up(f"c{n}", 41.0 + 4 * n, start_phase=3.0)
        engine.finish(f"c{n}", 42.0 + 4 * n, Outcome(True))
    assert engine.start_interval("pve2") == pytest.approx(5.25 / 5)


def test_a_longer_window_holds_the_slots_already_taken_and_a_pending_tunnel_teaches_it() -> None:
    engine = MigrationEngine(EnginePolicy())
    started(engine, "a", 0.0)
    started(engine, "b", 1.05)
    assert engine.pending_handshakes("pve2", 6.0) == 1  # a's 5.25 s are over, b's are not
    engine.notify_tunnel_pending("a", 10.0)  # its log at 10 s: no tunnel yet
    assert engine.pending_handshakes("pve2", 10.0) == 2  # both held again: 1.25 x 10 s
    assert engine.pending_handshakes("pve2", 1.05 + 12.49) == 1
    assert engine.pending_handshakes("pve2", 1.05 + 12.5) == 0
    engine.finish("a", 11.0, Outcome(True))
    assert engine.pending_handshakes("pve2", 11.0) == 1
