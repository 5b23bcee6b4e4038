"""Hypothesis properties of the migration engine over random call sequences on a fake clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.engine import (
    EnginePolicy,
    Job,
    MaxStartups,
    MigrationEngine,
    Outcome,
    RetryPolicy,
)
from proxmigrate.failures import Reason

TARGETS = ("n1", "n2", "n3")
SOURCES = ("n1", "n4")
OUTCOMES = (
    Outcome(True),
    Outcome(False, Reason.SSH_DROPPED, True),
    Outcome(False, "timeout", True),
    Outcome(False, Reason.VM_LOCKED, False),
    Outcome(True, Reason.SSH_DROPPED, True),  # end-phase drop, VM moved
)

policies = st.builds(
    EnginePolicy,
    max_parallel=st.integers(1, 6),
    max_parallel_per_target=st.none() | st.integers(1, 3),
    max_parallel_per_source=st.none() | st.integers(1, 3),
    ssh_max_startups=st.sampled_from([MaxStartups(), MaxStartups(4, 30, 10), MaxStartups(1, 0, 1)]),
    handshake_safety=st.sampled_from([0.1, 0.5, 1.0]),
    handshake_seconds=st.floats(0.05, 0.5),
    start_spread_seconds=st.floats(0.0, 3.0),
    end_spread_seconds=st.floats(0.0, 2.0),
    aimd_increase_every=st.integers(1, 3),
    priority_aging_seconds=st.none() | st.floats(1.0, 50.0),
    retry=st.builds(
        RetryPolicy,
        max_attempts=st.integers(1, 3),
        backoff_base=st.floats(0.0, 5.0),
        backoff_max=st.just(20.0),
        jitter=st.sampled_from([0.0, 0.2]),
    ),
)

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.integers(0, 9),
            st.sampled_from(TARGETS),
            st.sampled_from(SOURCES),
            st.integers(0, 2),
        ),
        st.tuples(st.just("poll")),
        st.tuples(st.just("wake")),
        st.tuples(st.just("advance"), st.floats(0.0, 8.0)),
        st.tuples(st.just("finish"), st.integers(0, 20), st.sampled_from(OUTCOMES)),
        st.tuples(st.just("cancel"), st.integers(0, 9)),
        st.tuples(st.just("ending"), st.integers(0, 20)),
        st.tuples(st.just("tunnel"), st.integers(0, 20)),
    ),
    max_size=60,
)


@dataclass
class Model:
    """What the test knows independently of the engine, to check it against."""

    policy: EnginePolicy
    engine: MigrationEngine
    now: float = 0.0
    running: dict[str, Job] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)  # submitted, not cancelled, not ended for good
    attempts: dict[str, int] = field(default_factory=dict)
    last_start: dict[str, float] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    def poll(self) -> list[Job]:
        wakeup = self.engine.next_wakeup(self.now)
        budgets = {t: self.engine.handshake_budget(t) for t in TARGETS}
        limits = {t: self.engine.concurrency_limit(t) for t in TARGETS}
        started = self.engine.poll(self.now)
        assert (wakeup is not None and wakeup <= self.now) == bool(started)
        for job in started:
            assert job.key in self.live, "started a job that is not queued"
            assert job.key not in self.running, "started a running job again"
            self.running[job.key] = job
            self.attempts[job.key] = self.attempts.get(job.key, 0) + 1
            assert self.attempts[job.key] <= self.policy.retry.max_attempts
        self.check_caps(started, budgets, limits)
        return started

    def check_caps(
        self, started: list[Job], budgets: dict[str, int], limits: dict[str, int]
    ) -> None:
        policy = self.policy
        assert len(self.running) <= policy.max_parallel
        for source in SOURCES:
            count = sum(1 for j in self.running.values() if j.source == source)
            assert policy.max_parallel_per_source is None or count <= policy.max_parallel_per_source
        starts_per_target: dict[str, int] = {}
        for job in started:
            starts_per_target[job.target] = starts_per_target.get(job.target, 0) + 1
        for target, starts in starts_per_target.items():
            count = sum(1 for j in self.running.values() if j.target == target)
            assert count <= limits[target] <= policy.target_concurrency_cap
            assert self.engine.pending_handshakes(target, self.now) <= budgets[target]
            assert budgets[target] <= policy.handshake_budget
            # one start per target per instant, spaced by the budget's share of the window
            assert starts == 1
            previous = self.last_start.get(target)
            if previous is not None:
                spacing = policy.start_window_seconds / budgets[target]
                assert self.now - previous >= spacing - 1e-9
            self.last_start[target] = self.now

    def finish(self, key: str, outcome: Outcome) -> None:
        decision = self.engine.finish(key, self.now, outcome)
        del self.running[key]
        assert decision.attempt == self.attempts[key]
        if outcome.succeeded:
            assert decision.kind == "done"
        elif outcome.transient and self.attempts[key] < self.policy.retry.max_attempts:
            assert decision.kind == "retry"
            assert decision.retry_at is not None and decision.retry_at >= self.now
        else:
            assert decision.kind == "failed"
        if decision.kind != "retry":
            self.live.discard(key)
            self.attempts.pop(key)
            if decision.kind == "done":
                self.done.add(key)


def nth_running(model: Model, index: int) -> str | None:
    keys = sorted(model.running)
    return keys[index % len(keys)] if keys else None


def apply(model: Model, op: tuple[object, ...]) -> None:
    engine = model.engine
    match op:
        case ("submit", int(n), str(target), str(source), int(priority)):
            key = f"vm{n}"
            engine.submit(Job(key, 100 + n, source, target, priority), model.now)
            if key not in model.running:
                model.live.add(key)
                model.done.discard(key)
        case ("poll",):
            model.poll()
        case ("wake",):
            wakeup = engine.next_wakeup(model.now)
            if wakeup is not None:
                model.now = max(model.now, wakeup)
                assert model.poll(), "next_wakeup promised a start"
        case ("advance", float(seconds)):
            model.now += seconds
        case ("finish", int(index), Outcome() as outcome):
            picked = nth_running(model, index)
            if picked is not None:
                model.finish(picked, outcome)
        case ("cancel", int(n)):
            key = f"vm{n}"
            was_queued = key in model.live and key not in model.running
            assert engine.cancel(key) == was_queued
            if was_queued:
                model.live.discard(key)
                model.attempts.pop(key, None)
        case ("ending", int(index)):
            picked = nth_running(model, index)
            if picked is not None:
                engine.notify_ending(picked, model.now)
        case ("tunnel", int(index)):
            picked = nth_running(model, index)
            if picked is not None:
                engine.notify_tunnel_up(picked, model.now)


@settings(max_examples=250, deadline=None)
@given(policy=policies, ops=operations, seed=st.integers(0, 2**16))
def test_engine_invariants_hold_and_every_job_eventually_runs(
    policy: EnginePolicy, ops: list[tuple[object, ...]], seed: int
) -> None:
    model = Model(policy, MigrationEngine(policy, random.Random(seed)))
    for op in ops:
        apply(model, op)

    # Drain: running jobs succeed, time advances to each promised wake-up; all must run.
    for _ in range(500):
        for key in sorted(model.running):
            model.finish(key, Outcome(True))
        if engine_idle(model):
            break
        wakeup = model.engine.next_wakeup(model.now)
        assert wakeup is not None, "queued jobs but no way to start them"
        model.now = max(model.now, wakeup)
        assert model.poll()
    assert engine_idle(model)
    assert not model.live, f"never completed: {model.live}"


def engine_idle(model: Model) -> bool:
    snapshot = model.engine.snapshot(model.now)
    return snapshot.queued == 0 and snapshot.running == 0
