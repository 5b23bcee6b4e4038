"""The migration engine: which queued migrations may start now, and what follows an attempt."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from proxmigrate.engine.aimd import AdaptiveAllowances
from proxmigrate.engine.jobs import Decision, EngineSnapshot, Job, Outcome
from proxmigrate.engine.links import LinkBounds, awaiting_rates
from proxmigrate.engine.pacing import HandshakePacer
from proxmigrate.engine.policy import EnginePolicy
from proxmigrate.engine.retry import backoff_delay
from proxmigrate.engine.running import Running
from proxmigrate.failures import Reason


@dataclass
class _Queued:
    job: Job
    seq: int  # FIFO order, kept across retries
    enqueued_at: float  # first submission, for priority aging
    attempts: int = 0  # attempts already made
    not_before: float = float("-inf")


class MigrationEngine:
    """Pure scheduler state; every time is passed in by the caller and must not decrease."""

    def __init__(self, policy: EnginePolicy, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._queued: dict[str, _Queued] = {}
        self._running: dict[str, Running] = {}
        self._running_per_target: Counter[str] = Counter()
        self._running_per_source: Counter[str] = Counter()
        self._running_vmids: Counter[int] = Counter()
        self._links = LinkBounds()
        self._next_seq = 0
        self._pacer = HandshakePacer(policy.start_window_seconds, policy.end_window_seconds)
        self._allowances = AdaptiveAllowances(
            policy.target_concurrency_cap, policy.handshake_budget, policy.aimd_increase_every
        )

    @property
    def policy(self) -> EnginePolicy:
        return self._policy

    def update_policy(self, policy: EnginePolicy) -> None:
        """Apply a changed spec; queue, running jobs and AIMD reductions are kept.

        Running jobs above a lowered cap are not stopped; new starts wait until they fit.
        """
        self._policy = policy
        self._pacer.set_windows(policy.start_window_seconds, policy.end_window_seconds)
        self._allowances.set_caps(
            policy.target_concurrency_cap, policy.handshake_budget, policy.aimd_increase_every
        )

    def submit(self, job: Job, now: float) -> None:
        """Queue a job. Idempotent by key: a running key is left alone, a queued one takes the
        new job's fields (e.g. a changed priority) and keeps its place and attempt count."""
        if job.key in self._running:
            return
        queued = self._queued.get(job.key)
        if queued is not None:
            queued.job = job
            return
        self._queued[job.key] = _Queued(job, self._take_seq(), now)

    def cancel(self, key: str) -> bool:
        """Drop a queued job (also one waiting for a retry); True if it was queued.

        A running job is not touched: the controller stops its task and reports `finish`.
        """
        return self._queued.pop(key, None) is not None

    def adopt_running(self, job: Job, started_at: float, attempt: int = 1) -> None:
        """Count a migration found running after an operator restart against caps and pacing.

        `attempt` is the attempt number it runs as (from the resource's status).
        """
        if job.key in self._running:
            return
        queued = self._queued.pop(job.key, None)
        seq = queued.seq if queued is not None else self._take_seq()
        enqueued_at = queued.enqueued_at if queued is not None else started_at
        self._mark_running(Running(job, seq, enqueued_at, attempt, started_at))

    def state(self, key: str) -> Literal["queued", "running"] | None:
        if key in self._running:
            return "running"
        return "queued" if key in self._queued else None

    def in_flight(self) -> dict[int, str]:
        """Each queued or running guest's target (vmid -> node): the moves of the cluster a
        new drain plan counts as under way (`DrainRequest.in_flight`)."""
        jobs = [queued.job for queued in self._queued.values()]
        jobs += [running.job for running in self._running.values()]
        return {job.vmid: job.target for job in jobs}

    def poll(self, now: float) -> list[Job]:
        """Jobs to start now, best first; the engine counts them running from `now` on."""
        started: list[Job] = []
        if len(self._running) >= self._policy.max_parallel:
            return started
        for queued in self._eligible_in_order(now):
            if len(self._running) >= self._policy.max_parallel:
                break
            if not self._fits(queued.job, now):
                continue
            del self._queued[queued.job.key]
            running = Running(queued.job, queued.seq, queued.enqueued_at, queued.attempts + 1, now)
            self._mark_running(running)
            started.append(queued.job)
        return started

    def notify_tunnel_up(self, key: str, now: float, start_phase: float | None = None) -> None:
        """The task log shows the tunnel authenticated (`ssh tunnel ver 1`): start phase over.
        `start_phase`: how long it took by the log's own times, which teaches the target's
        start window (rule 2).

        Optional: without it the start phase is assumed to last `start_spread_seconds`.
        """
        del now  # the slot is freed at once; kept for a uniform call shape
        running = self._running.get(key)
        if running is not None:
            running.tunnel_up = True
            self._pacer.record_tunnel_up(running.job.target, key, start_phase)

    def notify_tunnel_pending(self, key: str, now: float) -> None:
        """The task log shows no tunnel yet: the start phase has lasted `now - start` at least,
        which teaches the target's start window as `notify_tunnel_up` does."""
        running = self._running.get(key)
        if running is not None:
            self._pacer.observe_start_phase(running.job.target, now - running.started_at)

    def notify_ending(self, key: str, now: float) -> None:
        """The transfer is ending or has ended (e.g. `migration status: completed`): the
        end-phase handshakes (`rm -f`, `qm unlock`) are coming, so hold a slot for them until
        `end_spread_seconds + handshake_seconds` after the latest such call, or `finish`.

        Call it on every task poll while the log shows the end near: each call extends the
        hold, so an early notice (e.g. at 90 % transferred) stays covered. A predicted
        end leaves the migration on its links (rules 7, 8): its stream may still send
        (`notify_transfer_ended`). Unknown or finished keys are ignored."""
        running = self._running.get(key)
        if running is not None:
            self._pacer.record_ending(running.job.target, key, now)

    def notify_transfer_ended(self, key: str) -> None:
        """The task log shows the transfer ended (`migration status: completed`): its end
        phase sends no memory, so it no longer counts on its links (rules 7, 8). Unknown or
        finished keys are ignored."""
        running = self._running.get(key)
        if running is not None:
            running.transferred = True

    def observe_rate(
        self,
        key: str,
        bytes_per_second: float,
        dirty_bounds: tuple[float, float] | None = None,
        now: float | None = None,
    ) -> None:
        """The task log's latest transfer rate of a running migration (`migration active,
        ... Z/s`); times the streams leaving its source now, it tells that link's outflow.

        `dirty_bounds` (at least, at most; bytes/s) is what the log tells of the guest's
        dirty rate; the convergence rule clamps its size-based guess into them. `now`, the
        time it was read, lets only rates read at about the same time tell that a slower
        stream is held by its target (without it, every rate counts)."""
        running = self._running.get(key)
        if running is not None:
            self._links.observe(
                running, bytes_per_second, list(self._running.values()), self._policy, now
            )
            if dirty_bounds is not None:
                running.dirty_bounds = dirty_bounds

    def awaits_rate(self, key: str) -> bool:
        """A running migration's first rate is what a queued job of its source waits for:
        the source's streams without a rate hold its next start (rule 7)."""
        running = self._running.get(key)
        if running is None or running.source_rate is not None:
            return False
        if len(self._running) >= self._policy.max_parallel:
            return False  # the cluster's cap holds the next start, not the rates
        source = running.job.source
        if not any(queued.job.source == source for queued in self._queued.values()):
            return False
        streams = [
            r for r in self._running.values() if r.job.source == source and not r.transferred
        ]
        return awaiting_rates(streams, self._policy)

    def awaits_end(self, key: str, now: float) -> bool:
        """A queued job past its backoff may wait for what this running migration's end
        frees: its links' share (its transfer not seen ended: rules 7, 8), a slot under the
        cluster's cap, or its target's or source's where a job of that target or source is
        at their limit. Else its end, seen late, delays no start (the runtime then looks
        for it less often: runtime/look_schedule.py `UNAWAITED_END_SECONDS`)."""
        running = self._running.get(key)
        if running is None:
            return False
        jobs = [queued.job for queued in self._queued.values() if queued.not_before <= now]
        if not jobs:
            return False
        if len(self._running) >= self._policy.max_parallel:
            return True
        migrations = list(self._running.values())
        return any(self._holds(running, job, migrations, now) for job in jobs)

    def finish(self, key: str, now: float, outcome: Outcome) -> Decision:
        """Record how a running job's attempt ended and decide what follows.

        Success: done. Permanent failure: failed at once. Transient failure: queued again
        with a backoff (keeping its FIFO place) unless it used `retry.max_attempts`.
        `ssh_dropped` halves the target's allowances; other successes slowly raise them.
        Raises KeyError for a key that is not running.
        """
        running = self._running.pop(key)
        target = running.job.target
        self._running_per_target[target] -= 1
        self._running_per_source[running.job.source] -= 1
        self._running_vmids[running.job.vmid] -= 1
        self._pacer.release(target, key)
        if not self._running:
            self._links.forget()
        if outcome.reason is Reason.SSH_DROPPED:
            self._allowances.on_drop(target, running.started_at, now)
        elif outcome.succeeded:
            self._allowances.on_success(target)

        if outcome.succeeded:
            return Decision("done", running.attempt, reason=outcome.reason)
        if not outcome.transient or running.attempt >= self._policy.retry.max_attempts:
            return Decision("failed", running.attempt, reason=outcome.reason)
        retry_at = now + backoff_delay(self._policy.retry, running.attempt, self._rng)
        self._queued[key] = _Queued(
            running.job, running.seq, running.enqueued_at, running.attempt, retry_at
        )
        return Decision("retry", running.attempt, retry_at=retry_at, reason=outcome.reason)

    def next_wakeup(self, now: float) -> float | None:
        """Earliest time >= `now` at which `poll` could start something if no other call
        happens first (`now` itself if something can start already); None if only an
        event (finish, submit, policy change) can unblock the queue."""
        if not self._queued or len(self._running) >= self._policy.max_parallel:
            return None
        earliest: float | None = None
        for queued in self._queued.values():
            job = queued.job
            if not self._below_caps(job):
                continue
            budget = self._allowances.handshakes(job.target)
            ready = max(queued.not_before, self._pacer.ready_at(job.target, now, budget))
            earliest = ready if earliest is None else min(earliest, ready)
        return earliest

    def pending_handshakes(self, target: str, now: float) -> int:
        """The engine's upper-bound estimate of our pending SSH handshakes on `target`."""
        return self._pacer.pending(target, now)

    def handshake_budget(self, target: str) -> int:
        """Current (AIMD-adjusted) most pending handshakes the engine lets `target` have."""
        return self._allowances.handshakes(target)

    def concurrency_limit(self, target: str) -> int:
        """Current (AIMD-adjusted) most migrations `target` may receive at once."""
        return self._allowances.concurrency(target)

    def start_interval(self, target: str) -> float:
        """Least time between two starts to `target` under its current budget."""
        return self._pacer.start_interval(self._allowances.handshakes(target), target)

    def snapshot(self, now: float) -> EngineSnapshot:
        """Counts and per-target limits for metrics and status."""
        targets = (
            {q.job.target for q in self._queued.values()}
            | {r.job.target for r in self._running.values()}
            | set(self._allowances.reduced_targets())
        )
        return EngineSnapshot(
            queued=len(self._queued),
            waiting_retry=sum(1 for q in self._queued.values() if q.not_before > now),
            running=len(self._running),
            running_per_target={t: n for t, n in self._running_per_target.items() if n},
            running_per_source={s: n for s, n in self._running_per_source.items() if n},
            limit_per_target={t: self.concurrency_limit(t) for t in targets},
            handshake_budget_per_target={t: self.handshake_budget(t) for t in targets},
            pending_handshakes_per_target={t: self.pending_handshakes(t, now) for t in targets},
        )

    def _take_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _mark_running(self, running: Running) -> None:
        job = running.job
        self._running[job.key] = running
        self._running_per_target[job.target] += 1
        self._running_per_source[job.source] += 1
        self._running_vmids[job.vmid] += 1
        self._pacer.record_start(job.target, job.key, running.started_at)

    def _eligible_in_order(self, now: float) -> list[_Queued]:
        """Queued jobs past their backoff: higher (aged) priority first, then FIFO."""
        aging = self._policy.priority_aging_seconds

        def order(queued: _Queued) -> tuple[float, int]:
            boost = 0.0 if aging is None else (now - queued.enqueued_at) / aging
            return (-(queued.job.priority + boost), queued.seq)

        eligible = [q for q in self._queued.values() if q.not_before <= now]
        return sorted(eligible, key=order)

    def _below_caps(self, job: Job) -> bool:
        """Per-target and per-source counts allow one more (time does not change these)."""
        if self._running_vmids[job.vmid]:
            return False  # one migration per VM at a time (PVE would refuse: VM is locked)
        if self._running_per_target[job.target] >= self._allowances.concurrency(job.target):
            return False
        source_cap = self._policy.max_parallel_per_source
        running = self._running_per_source[job.source]
        if source_cap is not None and running >= source_cap:
            return False
        return self._links.allows(job, list(self._running.values()), self._policy)

    def _holds(self, running: Running, job: Job, migrations: list[Running], now: float) -> bool:
        """`running` counts against a limit `job` is at: one migration per guest, a link
        they share that holds `job` (rules 7, 8; `running` still on it: the end of one
        stream may not free it, that of several may), its target's concurrency allowance
        or handshake budget (end-phase holds included: `notify_ending` renews them until
        `finish`), its source's cap. `migrations`: every running one, as the link rules take
        them."""
        mine = running.job
        if job.vmid == mine.vmid:
            return True
        shares = job.source == mine.source or job.target == mine.target
        if (
            shares
            and not running.transferred
            and not self._links.allows(job, migrations, self._policy)
        ):
            return True
        target = mine.target
        if job.target == target and (
            self._running_per_target[target] >= self._allowances.concurrency(target)
            or self._pacer.pending(target, now) >= self._allowances.handshakes(target)
        ):
            return True
        source_cap = self._policy.max_parallel_per_source
        return (
            job.source == mine.source
            and source_cap is not None
            and self._running_per_source[mine.source] >= source_cap
        )

    def _fits(self, job: Job, now: float) -> bool:
        """All per-job limits allow starting `job` at `now` (the cluster cap is checked apart)."""
        if not self._below_caps(job):
            return False
        budget = self._allowances.handshakes(job.target)
        return self._pacer.ready_at(job.target, now, budget) <= now
