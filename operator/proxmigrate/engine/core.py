"""The migration engine: which queued migrations may start now, and what follows an attempt."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from proxmigrate.engine.aimd import AdaptiveAllowances
from proxmigrate.engine.jobs import Decision, EngineSnapshot, Job, Outcome
from proxmigrate.engine.pacing import HandshakePacer
from proxmigrate.engine.policy import EnginePolicy
from proxmigrate.engine.retry import backoff_delay
from proxmigrate.failures import Reason

# A rate within this share of the source's highest is that source's top rate (`_learn_links`).
TOP_RATE_SHARE = 0.99


@dataclass
class _Queued:
    job: Job
    seq: int  # FIFO order, kept across retries
    enqueued_at: float  # first submission, for priority aging
    attempts: int = 0  # attempts already made
    not_before: float = float("-inf")


@dataclass
class _Running:
    job: Job
    seq: int
    enqueued_at: float
    attempt: int
    started_at: float
    # the source's outflow as told by this stream's latest rate: that rate times the streams
    # then leaving the source, which share its link (bytes/s; see `_outflow`)
    source_rate: float | None = None
    # that rate was at the stream's own cap: the link carries at least `source_rate`, maybe more
    capped: bool = False
    # its latest rate (bytes/s): the source's other streams' readings are judged against it
    rate: float | None = None
    # bytes/s its guest re-dirties, (at least, at most) as its progress lines tell
    dirty_bounds: tuple[float, float] = (0.0, float("inf"))
    # its tunnel is up (`notify_tunnel_up`): it sends memory until its transfer ends
    tunnel_up: bool = False
    # its log showed the transfer ended (`notify_transfer_ended`): it sends no more memory
    transferred: bool = False


class MigrationEngine:
    """Pure scheduler state; every time is passed in by the caller and must not decrease."""

    def __init__(self, policy: EnginePolicy, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._queued: dict[str, _Queued] = {}
        self._running: dict[str, _Running] = {}
        self._running_per_target: Counter[str] = Counter()
        self._running_per_source: Counter[str] = Counter()
        self._running_vmids: Counter[int] = Counter()
        # each source's outflow as last told while streams ran: the link outlives its streams
        self._outflow: dict[str, float] = {}
        # the least outflow a source's top stream to each target told (`_learn_links`)
        self._least_told: dict[tuple[str, str], float] = {}
        # the least ingress a target's streams held by it told (`_learn_links`)
        self._least_ingress: dict[str, float] = {}
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
        self._mark_running(_Running(job, seq, enqueued_at, attempt, started_at))

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
            running = _Running(queued.job, queued.seq, queued.enqueued_at, queued.attempts + 1, now)
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
    ) -> None:
        """The task log's latest transfer rate of a running migration (`migration active,
        ... Z/s`); times the streams leaving its source now, it tells that link's outflow.

        `dirty_bounds` (at least, at most; bytes/s) is what the log tells of the guest's
        dirty rate; the convergence rule clamps its size-based guess into them."""
        running = self._running.get(key)
        if running is not None:
            source = running.job.source
            running.tunnel_up = True  # a rate: its memory is under way
            capped = self._policy.capped_stream_rate
            running.capped = capped is not None and bytes_per_second >= capped
            streams = [r for r in self._running.values() if r.job.source == source]
            sharing = len(streams)
            if running.capped:  # the link carries what the streams sending now send
                sharing = sum(1 for r in streams if r.tunnel_up and not r.transferred)
            running.source_rate = bytes_per_second * max(1, sharing)
            self._learn_links(running, bytes_per_second, streams)
            running.rate = bytes_per_second
            outflow = _outflow(streams)
            if outflow is not None:
                self._outflow[source] = outflow
            if dirty_bounds is not None:
                running.dirty_bounds = dirty_bounds

    def _learn_links(self, running: _Running, rate: float, streams: list[_Running]) -> None:
        """Keep the least outflow told by a stream at its source's top rate, per target,
        and the least ingress told by a stream held below it, per target.

        A rate times the migrations leaving the source overstates the link whenever some
        of them are in a start or end phase (they send nothing), and the streams running
        now told it at other moments: up to twice the link in bench runs, so rules 7 and 8
        let 10-11 streams share a 10 Gbit/s link and a guest dirtying 120 MiB/s fell below
        its share. A link does not change, and with all of them sending the count is
        right: the least such told is the tightest bound. It counts only from a stream
        whose rate no other stream of the source beats and that does not run alone there
        (its rate may be its target's), and only for jobs to the same target: a slower
        target's streams, all held by it, do not shrink the link the faster targets'
        streams share.

        A stream slower than another of its source is held elsewhere, by its target (its
        source shares fairly): its rate times the migrations into that target tells the
        target's ingress, which rules 7 and 8 then keep as they keep a source's link. A
        guest dirtying 120 MiB/s otherwise went to a 5 Gbit/s target with four others.
        """
        if running.capped or running.source_rate is None:
            return
        sending = [r for r in streams if not r.transferred]
        if len(sending) < 2:
            return
        others = [
            r.rate for r in sending if r is not running and r.rate is not None and not r.capped
        ]
        target = running.job.target
        if all(rate >= TOP_RATE_SHARE * other for other in others):
            key = (running.job.source, target)
            told = running.source_rate
            self._least_told[key] = min(self._least_told.get(key, told), told)
            return
        into = [r for r in self._running.values() if r.job.target == target and not r.transferred]
        if len(into) >= 2:
            told = rate * len(into)
            self._least_ingress[target] = min(self._least_ingress.get(target, told), told)

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
        if not self._running:  # what the links told holds for a busy spell, not for ever:
            # other traffic may have shared them, and the next drain learns them again
            self._least_told.clear()
            self._least_ingress.clear()
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

    def _mark_running(self, running: _Running) -> None:
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
        return self._stream_rate_allows(job)

    def _stream_rate_allows(self, job: Job) -> bool:
        """One more stream from `job.source` would still leave each at `min_stream_rate`
        (and into `job.target` too, when its ingress was learned from streams it held),
        and every stream on the source's link (and the target's, if declared or learned) at
        `convergence_margin` times its guest's dirty rate.

        A migration whose log showed its transfer ended is off its links (`transferred`):
        its end phase (`rm -f`, `qm unlock`) sends no memory, and counted as a stream it
        kept a small guest from starting behind it for the whole phase.

        The source's outflow is what its streams' rates tell (`_outflow`), at most the
        least told on the way to `job.target` while all sent (`_learn_links`); with no
        stream measured now, the outflow last told stands in; before any, a declared
        capacity.
        Convergence takes the larger of that and the declared capacity (else
        `cold_link_capacity`): a declared link is not shrunk by rates of capped streams.
        """
        streams = [
            r for r in self._running.values() if r.job.source == job.source and not r.transferred
        ]
        outflows = [r.source_rate for r in streams if r.source_rate is not None]
        told = _outflow(streams)
        least = self._least_told.get((job.source, job.target))
        if least is not None:
            told = least if told is None else min(told, least)
        capacity = (
            told
            if told is not None
            else self._outflow.get(job.source, self._policy.declared_link(job.source))
        )
        floor = self._policy.min_stream_rate
        if floor is not None and len(streams) >= self._policy.min_streams_per_source:
            if len(streams) - len(outflows) >= self._policy.unmeasured_streams_per_source:
                return False  # grow further once the link's rates are seen
            if capacity is not None and capacity / (len(streams) + 1) < floor:
                return False
        declared = self._policy.declared_link(job.source)
        link = max(capacity or 0.0, declared or self._policy.cold_link_capacity)
        if not self._converges(job, streams, link):
            return False
        into_target = [
            r for r in self._running.values() if r.job.target == job.target and not r.transferred
        ]
        ingress = self._policy.declared_link(job.target)
        if ingress is None and job.target in self._least_ingress:
            ingress = self._least_ingress[job.target]
            crowded = len(into_target) >= self._policy.min_streams_per_source
            if floor is not None and crowded and ingress / (len(into_target) + 1) < floor:
                return False
        return ingress is None or self._converges(job, into_target, ingress)

    def _converges(self, job: Job, sharing: list[_Running], capacity: float) -> bool:
        """`job` joining the streams `sharing` a link of `capacity` leaves each of them,
        and itself, a share of at least `convergence_margin` times its guest's dirty rate.
        A lone stream is never held back: the link is all it can get."""
        margin = self._policy.convergence_margin
        if margin is None or not sharing:
            return True
        need = margin * max(self._dirty(job, None), *(self._dirty(r.job, r) for r in sharing))
        return capacity / (len(sharing) + 1) >= need

    def _dirty(self, job: Job, running: _Running | None) -> float:
        """A guest's dirty rate: guessed from its size, within what its progress lines told."""
        policy = self._policy
        guess = max(policy.assumed_dirty_floor, job.memory_bytes * policy.assumed_dirty_share)
        if running is None:
            return guess
        at_least, at_most = running.dirty_bounds
        return min(max(guess, at_least), at_most)

    def _fits(self, job: Job, now: float) -> bool:
        """All per-job limits allow starting `job` at `now` (the cluster cap is checked apart)."""
        if not self._below_caps(job):
            return False
        budget = self._allowances.handshakes(job.target)
        return self._pacer.ready_at(job.target, now, budget) <= now


def _outflow(streams: list[_Running]) -> float | None:
    """A source's outflow as its streams' rates tell it; None if none was measured.

    A rate below the stream cap was set by the link: times the streams then leaving the
    source it tells the outflow, and the least of these counts (streams in their start or
    end phase send no memory, so the others overstate the link; the least overstates it
    least; rates seen when fewer streams ran are scaled by that count, not by today's).
    A rate at the cap (`capped_stream_rate`: one ssh/sshd pair's cipher) was not set by
    the link, which carries at least that rate times the streams sending then (tunnel up,
    transfer not ended: counting those still logging in read 1 GiB/s as 5 on a 10 Gbit/s
    link): such readings count only while no stream is below the cap, and then the most
    told, so a fast link is learned as its capped streams add up instead of being read as
    one stream's cipher speed.
    """
    limited = [r.source_rate for r in streams if r.source_rate is not None and not r.capped]
    if limited:
        return min(limited)
    bounds = [r.source_rate for r in streams if r.source_rate is not None and r.capped]
    return max(bounds) if bounds else None
