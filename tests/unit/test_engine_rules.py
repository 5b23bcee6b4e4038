"""Example tests for each rule of the migration engine, on a fake clock (plain floats)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from proxmigrate.engine import (
    EnginePolicy,
    Job,
    MaxStartups,
    MigrationEngine,
    Outcome,
    RetryPolicy,
)
from proxmigrate.failures import Reason

OK = Outcome(succeeded=True)
DROPPED = Outcome(succeeded=False, reason=Reason.SSH_DROPPED, transient=True)
LOCKED = Outcome(succeeded=False, reason=Reason.LOCAL_RESOURCES, transient=False)

# No pacing in the way: a tiny start window lets every cap be tested on its own.
UNPACED = EnginePolicy(
    handshake_seconds=1e-6, start_spread_seconds=0.0, priority_aging_seconds=None
)


def job(n: int, target: str = "pve2", source: str = "pve1", priority: int = 0) -> Job:
    return Job(key=f"vm{n}", vmid=100 + n, source=source, target=target, priority=priority)


def keys(jobs: list[Job]) -> list[str]:
    return [j.key for j in jobs]


def test_cluster_cap_limits_running_jobs() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=3))
    for n in range(5):
        engine.submit(job(n, target=f"t{n}"), now=0.0)
    assert keys(engine.poll(0.0)) == ["vm0", "vm1", "vm2"]
    assert engine.poll(1.0) == []
    engine.finish("vm1", 2.0, OK)
    assert keys(engine.poll(2.0)) == ["vm3"]


def test_per_target_cap_does_not_block_other_targets() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=8, max_parallel_per_target=1))
    engine.submit(job(0, target="a"), 0.0)
    engine.submit(job(1, target="a"), 0.0)
    engine.submit(job(2, target="b"), 0.0)
    # vm1 waits for its target; vm2 behind it must not (no head-of-line blocking)
    assert keys(engine.poll(0.0)) == ["vm0", "vm2"]
    assert engine.next_wakeup(1.0) is None  # only a finish can unblock vm1
    engine.finish("vm0", 1.0, OK)
    assert keys(engine.poll(1.0)) == ["vm1"]


def test_per_source_cap() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=8, max_parallel_per_source=2))
    for n in range(3):
        engine.submit(job(n, target=f"t{n}", source="s1"), 0.0)
    engine.submit(job(3, target="t3", source="s2"), 0.0)
    assert keys(engine.poll(0.0)) == ["vm0", "vm1", "vm3"]
    assert engine.snapshot(0.0).running_per_source == {"s1": 2, "s2": 1}


def test_priority_first_then_fifo() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=1))
    engine.submit(job(0, target="a"), 0.0)
    engine.submit(job(1, target="b", priority=5), 0.0)
    engine.submit(job(2, target="c"), 0.0)
    engine.submit(job(3, target="d", priority=5), 0.0)
    order = []
    for step in range(4):
        (started,) = engine.poll(float(step))
        order.append(started.key)
        engine.finish(started.key, float(step), OK)
    assert order == ["vm1", "vm3", "vm0", "vm2"]


def test_aging_lets_an_old_low_priority_job_pass_a_high_priority_stream() -> None:
    policy = replace(UNPACED, max_parallel=1, priority_aging_seconds=10.0)
    engine = MigrationEngine(policy)
    engine.submit(job(0, target="a"), 0.0)
    started = []
    for step in range(1, 40):
        now = float(step)
        engine.submit(job(step, target=f"t{step}", priority=2), now)
        for started_job in engine.poll(now):
            started.append(started_job.key)
            engine.finish(started_job.key, now, OK)
    # waiting 20 s at one level per 10 s lifts priority 0 above fresh priority-2 jobs
    assert "vm0" in started
    assert 18 <= started.index("vm0") <= 22


def test_resubmit_is_idempotent_and_updates_priority() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=1))
    engine.submit(job(0, target="a"), 0.0)
    engine.submit(job(1, target="b"), 0.0)
    engine.submit(job(1, target="b"), 1.0)
    assert engine.snapshot(1.0).queued == 2
    engine.submit(job(1, target="b", priority=9), 1.0)
    assert keys(engine.poll(1.0)) == ["vm1"]
    engine.submit(job(1, target="b"), 2.0)  # running: left alone, not queued twice
    assert engine.state("vm1") == "running"
    assert engine.snapshot(2.0).queued == 1


def test_cancel_only_removes_queued_jobs() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=1))
    engine.submit(job(0, target="a"), 0.0)
    engine.submit(job(1, target="b"), 0.0)
    engine.poll(0.0)
    assert engine.cancel("vm0") is False
    assert engine.cancel("vm1") is True
    assert engine.cancel("vm1") is False
    engine.finish("vm0", 1.0, OK)
    assert engine.poll(1.0) == []


def test_finish_of_unknown_key_raises() -> None:
    engine = MigrationEngine(EnginePolicy())
    with pytest.raises(KeyError):
        engine.finish("nope", 0.0, OK)


def test_starts_to_one_target_are_spaced() -> None:
    policy = EnginePolicy(max_parallel=32)  # defaults: budget 5, window 5.25 s
    engine = MigrationEngine(policy)
    for n in range(4):
        engine.submit(job(n), 0.0)
    interval = engine.start_interval("pve2")
    assert interval == pytest.approx(5.25 / 5)
    assert keys(engine.poll(0.0)) == ["vm0"]
    assert engine.next_wakeup(0.0) == pytest.approx(interval)
    assert engine.poll(interval * 0.99) == []
    assert keys(engine.poll(interval)) == ["vm1"]
    # another target is not paced by pve2's starts
    engine.submit(job(9, target="pve3"), interval)
    assert keys(engine.poll(interval)) == ["vm9"]


def test_anticipated_completions_use_the_handshake_budget() -> None:
    # budget 3; no convergence rule (three streams of unknown guests fill a cold link)
    policy = EnginePolicy(max_parallel=32, handshake_safety=0.3, convergence_margin=None)
    engine = MigrationEngine(policy)
    for n in range(5):
        engine.submit(job(n), 0.0)
    t = 0.0
    for _ in range(3):
        engine.poll(t)
        t += engine.start_interval("pve2")
    t = 100.0  # start phases long over
    for key in ("vm0", "vm1", "vm2"):
        engine.notify_ending(key, t)
    assert engine.pending_handshakes("pve2", t) == 3
    assert engine.poll(t) == []
    assert engine.next_wakeup(t) == pytest.approx(t + policy.end_window_seconds)
    engine.finish("vm0", t + 1.0, OK)  # its end handshakes are over: slot freed
    assert keys(engine.poll(t + 1.0)) == ["vm3"]
    assert engine.pending_handshakes("pve2", t + 1.0) == 3


def test_repeated_ending_notices_keep_the_end_slot_until_finish() -> None:
    policy = EnginePolicy(max_parallel=8, handshake_safety=0.1)  # budget 1
    engine = MigrationEngine(policy)
    engine.adopt_running(job(0), started_at=0.0)
    engine.submit(job(1), 0.0)
    window = policy.end_window_seconds
    engine.notify_ending("vm0", 50.0)  # early notice, e.g. at 90 % transferred
    engine.notify_ending("vm0", 50.0 + window / 2)  # next task poll: still ending
    assert engine.poll(50.0 + window) == []
    assert engine.next_wakeup(50.0 + window) == pytest.approx(50.0 + 1.5 * window)
    engine.finish("vm0", 50.0 + window, OK)
    assert keys(engine.poll(50.0 + window)) == ["vm1"]


def test_tunnel_up_frees_the_start_slot_early() -> None:
    policy = EnginePolicy(max_parallel=32, handshake_safety=0.1)  # budget 1
    engine = MigrationEngine(policy)
    engine.submit(job(0), 0.0)
    engine.submit(job(1), 0.0)
    engine.poll(0.0)
    assert engine.next_wakeup(0.0) == pytest.approx(policy.start_window_seconds)
    engine.notify_tunnel_up("vm0", 1.0)
    assert engine.pending_handshakes("pve2", 1.0) == 0
    # the spacing still holds: the budget of one refills one window after the last start
    assert engine.poll(1.0) == []
    assert keys(engine.poll(policy.start_window_seconds)) == ["vm1"]


def test_adopted_running_jobs_count_against_caps_and_pacing() -> None:
    engine = MigrationEngine(EnginePolicy(max_parallel=2))
    engine.adopt_running(job(0), started_at=10.0, attempt=2)
    engine.adopt_running(job(1, target="pve3"), started_at=-50.0)
    engine.submit(job(2), 10.0)
    assert engine.poll(10.0) == []  # cluster cap of 2 reached
    assert engine.finish("vm0", 11.0, DROPPED).attempt == 2
    assert engine.state("vm0") == "queued"
    assert engine.poll(11.0) == []  # vm0's start still spaces pve2
    assert keys(engine.poll(10.0 + engine.start_interval("pve2"))) == ["vm2"]


def test_ssh_drop_halves_allowances_and_successes_restore_them() -> None:
    policy = EnginePolicy(max_parallel=8, aimd_increase_every=2, start_spread_seconds=0.0)
    engine = MigrationEngine(policy)
    assert (engine.concurrency_limit("pve2"), engine.handshake_budget("pve2")) == (8, 5)
    engine.adopt_running(job(0), started_at=0.0)
    engine.adopt_running(job(1), started_at=0.0)
    engine.finish("vm0", 1.0, DROPPED)
    assert (engine.concurrency_limit("pve2"), engine.handshake_budget("pve2")) == (4, 2)
    # the same wave's second drop is not a new signal
    engine.finish("vm1", 1.5, DROPPED)
    assert engine.concurrency_limit("pve2") == 4
    assert engine.start_interval("pve2") == pytest.approx(policy.start_window_seconds / 2)
    assert engine.snapshot(2.0).limit_per_target["pve2"] == 4
    for n in range(2, 30):
        engine.adopt_running(job(n), started_at=float(n))
        engine.finish(f"vm{n}", float(n), OK)
        if n == 3:
            assert (engine.concurrency_limit("pve2"), engine.handshake_budget("pve2")) == (5, 3)
    assert (engine.concurrency_limit("pve2"), engine.handshake_budget("pve2")) == (8, 5)
    # a later wave's drop halves again, down to the floor of one
    for n in range(30, 35):
        engine.adopt_running(job(n), started_at=100.0 + n)
        engine.finish(f"vm{n}", 100.0 + n, DROPPED)
    assert (engine.concurrency_limit("pve2"), engine.handshake_budget("pve2")) == (1, 1)
    assert engine.concurrency_limit("pve3") == 8  # other targets untouched


def test_an_end_phase_drop_counts_as_done_but_still_slows_the_target() -> None:
    engine = MigrationEngine(EnginePolicy(max_parallel=8))
    engine.adopt_running(job(0), started_at=0.0)
    decision = engine.finish("vm0", 30.0, Outcome(True, Reason.SSH_DROPPED, True))
    assert decision.kind == "done"
    assert engine.concurrency_limit("pve2") == 4


def test_transient_failures_retry_with_backoff_until_the_attempt_limit() -> None:
    retry = RetryPolicy(max_attempts=3, backoff_base=10.0, backoff_max=15.0, jitter=0.2)
    engine = MigrationEngine(replace(UNPACED, retry=retry), random.Random(7))
    engine.submit(job(0), 0.0)
    now = 0.0
    waits = []
    for attempt in (1, 2, 3):
        assert keys(engine.poll(now)) == ["vm0"]
        decision = engine.finish("vm0", now, DROPPED)
        assert decision.attempt == attempt
        if attempt == 3:
            assert decision.kind == "failed"
            assert decision.reason == Reason.SSH_DROPPED
            break
        assert decision.kind == "retry"
        assert decision.retry_at is not None
        waits.append(decision.retry_at - now)
        assert engine.poll(decision.retry_at - 0.01) == []
        assert engine.next_wakeup(now) == decision.retry_at
        assert engine.snapshot(now).waiting_retry == 1
        now = decision.retry_at
    assert 8.0 <= waits[0] <= 12.0  # 10 s +- 20 %
    assert 12.0 <= waits[1] <= 18.0  # 20 s capped at 15 s, +- 20 %
    assert engine.state("vm0") is None


def test_permanent_failure_fails_at_once() -> None:
    engine = MigrationEngine(UNPACED)
    engine.submit(job(0), 0.0)
    engine.poll(0.0)
    decision = engine.finish("vm0", 1.0, LOCKED)
    assert (decision.kind, decision.attempt, decision.reason) == ("failed", 1, "local_resources")
    assert engine.state("vm0") is None


def test_a_retried_job_keeps_its_fifo_place() -> None:
    engine = MigrationEngine(replace(UNPACED, max_parallel=1), random.Random(1))
    engine.submit(job(0, target="a"), 0.0)
    engine.submit(job(1, target="b"), 0.0)
    engine.poll(0.0)
    decision = engine.finish("vm0", 0.0, DROPPED)
    assert decision.retry_at is not None
    engine.submit(job(2, target="c"), 0.5)
    assert keys(engine.poll(0.5)) == ["vm1"]
    engine.finish("vm1", decision.retry_at, OK)
    assert keys(engine.poll(decision.retry_at)) == ["vm0"]


def test_update_policy_keeps_state_and_clamps_reductions() -> None:
    engine = MigrationEngine(EnginePolicy(max_parallel=8, max_parallel_per_target=8))
    engine.adopt_running(job(0), 0.0)
    engine.finish("vm0", 1.0, DROPPED)
    engine.submit(job(1), 1.0)
    engine.update_policy(EnginePolicy(max_parallel=8, max_parallel_per_target=2))
    assert engine.concurrency_limit("pve2") == 2
    assert engine.state("vm1") == "queued"
    engine.update_policy(EnginePolicy(max_parallel=16, max_parallel_per_target=None))
    assert engine.concurrency_limit("pve2") == 2  # recovers by successes, not by editing


def test_snapshot_reports_counts_and_limits() -> None:
    engine = MigrationEngine(EnginePolicy(max_parallel=8))
    engine.submit(job(0), 0.0)
    engine.submit(job(1), 0.0)
    engine.submit(job(2, target="pve3", source="pve4"), 0.0)
    engine.poll(0.0)
    snap = engine.snapshot(0.1)
    assert (snap.queued, snap.running) == (1, 2)
    assert snap.running_per_target == {"pve2": 1, "pve3": 1}
    assert snap.pending_handshakes_per_target == {"pve2": 1, "pve3": 1}
    assert snap.limit_per_target == {"pve2": 8, "pve3": 8}
    assert snap.handshake_budget_per_target == {"pve2": 5, "pve3": 5}


def test_max_startups_parse() -> None:
    assert MaxStartups.parse("10:30:100") == MaxStartups(10, 30, 100)
    assert MaxStartups.parse(" 20 ") == MaxStartups(20, 100, 20)
    assert str(MaxStartups.parse("10:30:60")) == "10:30:60"
    for bad in ("", "10:30", "a:b:c", "20:30:10", "10:130:100"):
        with pytest.raises(ValueError):
            MaxStartups.parse(bad)


@pytest.mark.parametrize(
    ("safety", "start", "budget"), [(0.5, 10, 5), (0.29, 100, 29), (0.01, 10, 1), (1.0, 10, 10)]
)
def test_handshake_budget_is_a_share_of_start(safety: float, start: int, budget: int) -> None:
    policy = EnginePolicy(ssh_max_startups=MaxStartups(start, 30, 100), handshake_safety=safety)
    assert policy.handshake_budget == budget


@pytest.mark.parametrize(
    "build",
    [
        lambda: EnginePolicy(max_parallel=0),
        lambda: EnginePolicy(max_parallel_per_target=0),
        lambda: EnginePolicy(handshake_safety=0.0),
        lambda: EnginePolicy(handshake_seconds=0.0),
        lambda: EnginePolicy(start_spread_seconds=-1.0),
        lambda: EnginePolicy(aimd_increase_every=0),
        lambda: EnginePolicy(priority_aging_seconds=0.0),
        lambda: RetryPolicy(max_attempts=0),
        lambda: RetryPolicy(backoff_base=10.0, backoff_max=5.0),
        lambda: RetryPolicy(jitter=1.0),
    ],
)
def test_invalid_policies_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()
